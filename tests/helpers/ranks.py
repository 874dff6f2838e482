"""Run a function on two CPU ranks under DeepSpeed's real launcher (gloo), collect results.

`run_ranks("tests.helpers.rank_jobs:some_job", {"arg": 1}, tmp_path)` starts
``deepspeed --num_gpus 2`` on ``tests/helpers/rank_entry.py``; every rank calls the job
with the args and writes its JSON-able return value to ``<tmp>/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from koda.distributed.comm import remove_shm_buffers
from koda.distributed.local_launch import command, free_port

REPO = Path(__file__).resolve().parents[2]


def rank_env(env: dict | None = None) -> dict:
    """The environment of a test launch: CPU ranks, no W&B, this checkout first on the path."""
    return {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}


def launch(module_args: list[str], world: int = 2, timeout: float = 600, env: dict | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`deepspeed --num_gpus world --module <module_args...>` with a private port."""
    port = free_port()
    try:
        return subprocess.run(command(world, port, module_args[0], module_args[1:]), capture_output=True, text=True,
                              timeout=timeout, env=rank_env(env), cwd=cwd or REPO)
    finally:
        remove_shm_buffers("127.0.0.1", port)


def run_ranks(target: str, args: dict, out_dir: Path, world: int = 2, timeout: float = 600) -> list:
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = launch(["tests.helpers.rank_entry", target, json.dumps(args), str(out_dir)], world, timeout)
    if proc.returncode != 0:
        raise AssertionError(f"ranks failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(world)]
