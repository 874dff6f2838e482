"""Run a function on two CPU ranks (real DeepSpeed, gloo), collect results.

`run_ranks("tests.helpers.rank_jobs:some_job", {"arg": 1}, tmp_path)` is
``koda.distributed.local_launch.run_ranks`` with the test environment (CPU ranks, no W&B,
this checkout first on the path) and a failure turned into a test failure with the ranks'
output.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from koda.distributed import local_launch

REPO = Path(__file__).resolve().parents[2]


def rank_env(env: dict | None = None) -> dict:
    """The environment of a test launch: CPU ranks, no W&B, this checkout first on the path."""
    return {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}


def launch(module_args: list[str], world: int = 2, timeout: float = 600, env: dict | None = None,
           cwd: Path | None = None, launcher: bool = False) -> subprocess.CompletedProcess:
    """`world` ranks of ``python -m <module_args...>`` with a private port. Started directly
    (``local_launch.spawn_ranks``: the environment DeepSpeed's launcher gives, without its two
    DeepSpeed-importing processes in front, ~10 s a launch on the CI machine); `launcher`:
    through ``deepspeed --num_gpus world --module`` itself, for tests of that path."""
    return local_launch.launch_ranks(module_args[0], module_args[1:], world, env=rank_env(env), timeout=timeout,
                                     cwd=cwd or REPO, direct=not launcher)


def run_ranks(target: str, args: dict, out_dir: Path, world: int = 2, timeout: float = 600) -> list:
    try:
        return local_launch.run_ranks(target, args, out_dir, world, env=rank_env(), timeout=timeout, cwd=REPO,
                                      direct=True)
    except local_launch.RanksFailed as err:
        raise AssertionError(f"ranks failed (exit {err.proc.returncode}):\n{err.tail()}") from None
