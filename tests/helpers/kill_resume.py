"""The kill -9 and resume check of an optimizer through ``koda train`` (K-FAC, Muon tests).

A straight run gives the reference metrics; a second run of the same config, checkpointing
every few steps, is killed with SIGKILL (front, launcher and ranks) after a save, resumed with
``--resume``, and must log exactly the reference's metrics at every step (timings aside).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time

import psutil
import pytest

from koda.distributed import checkpoint
from tests.helpers.ranks import REPO, rank_env

UNTIMED = re.compile(r"^(time|perf/.*|mem/.*)$")


def train_command(config, *extra) -> list[str]:
    return [sys.executable, "-m", "koda", "train", "--config", str(config), *extra]


def launch_command(topology, hostfile, *train_args) -> list[str]:
    """``koda launch`` of `topology` with its hostfile at `hostfile` and a free master port
    (the file's fixed one may be taken); `train_args` go to every rank's ``koda train``."""
    from koda.distributed.local_launch import free_port

    return [sys.executable, "-m", "koda", "launch", "--topology", str(topology), "--hostfile", str(hostfile),
            "--master-port", str(free_port()), "--", *map(str, train_args)]


def records(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def kill_job(proc) -> None:
    """SIGKILL to the front process and every process under it: ``koda train`` starts DeepSpeed's
    launcher in a session of its own, so the front's process group does not reach the ranks."""
    job = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    for p in job:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            p.kill()
    proc.wait()
    _, alive = psutil.wait_procs([p for p in job if p is not proc], timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"


def straight_run(config, run_dir, steps: int) -> list[dict]:
    proc = subprocess.run(train_command(config), cwd=REPO, env=rank_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logged = records(run_dir)
    assert [r["step"] for r in logged] == list(range(steps + 1))
    return logged


def kill_then_resume_matches(config, run_dir, every: int, steps: int, reference: list[dict], log) -> None:
    proc = subprocess.Popen(train_command(config), cwd=REPO, env=rank_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while max((r["step"] for r in records(run_dir)), default=0) <= every:      # logged after the save at `every`
        if proc.poll() is not None or time.time() > deadline:
            kill_job(proc)
            pytest.fail(f"the run ended or stalled before step {every + 1}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    kill_job(proc)
    killed_at = max(r["step"] for r in records(run_dir))
    resumed_at = int(checkpoint.resolve_tag(run_dir / "checkpoints").removeprefix("step"))
    assert resumed_at % every == 0 and 0 < resumed_at <= killed_at < steps, (resumed_at, killed_at)

    resumed = subprocess.run(train_command(config, "--resume"), cwd=REPO, env=rank_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed at step {resumed_at}" in resumed.stdout, resumed.stdout[-3000:]
    logged = records(run_dir)
    assert [r["step"] for r in logged] == list(range(steps + 1))
    for mine, theirs in zip(logged, reference, strict=True):
        keys = {k for k in mine if not UNTIMED.match(k)}
        assert keys == {k for k in theirs if not UNTIMED.match(k)}, mine["step"]
        for key in keys:
            assert mine[key] == theirs[key], (mine["step"], key, mine[key], theirs[key])
