"""SIGTERM/SIGUSR1 stop a 2-rank run cleanly: every rank saves at the next step boundary,
every process exits, `koda train` exits 0, and `--resume` continues. Real processes."""

import json
import os
import re
import signal
import subprocess
import time

import psutil
import pytest

from koda.distributed import checkpoint
from koda.distributed.local_launch import rank_processes
from tests.helpers.kill_resume import launch_command, train_command
from tests.helpers.ranks import REPO, rank_env
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow


def _front(config, log, *extra):
    """`koda train` as a user starts it, in its own session so signals reach only what we aim at."""
    return subprocess.Popen(train_command(config, *extra), cwd=REPO, env=rank_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _long_run(tiny_data, tmp_path):
    """A run that only a signal ends (2000 steps, no checkpoint or validation on the way)."""
    run_dir = tmp_path / "run"
    return run_dir, write_run_config(tmp_path / "run.yaml", tiny_data, run_dir, steps=2000,
                                     train={"checkpoint_every": 5000, "eval_every": 5000})


def _wait_for_step(run_dir, step, proc, timeout=300):
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before the signal"
        if metrics.is_file() and any(json.loads(x)["step"] >= step for x in metrics.read_text().splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _alive(pids, timeout=30):
    """The pids of `pids` still running (not zombies) after up to `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


def _stopped_at(log_path) -> int:
    found = re.findall(r"stopped at step (\d+)/\d+ on (SIG\w+)", log_path.read_text())
    assert len(found) == 1, log_path.read_text()[-3000:]
    return int(found[0][0])


def test_sigterm_then_sigusr1_to_one_rank_stop_cleanly_and_resume(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "run.yaml", tiny_data, run_dir, steps=2000,
                              train={"checkpoint_every": 5000, "eval_every": 5000, "keep_checkpoints": 5})
    checkpoints = run_dir / "checkpoints"

    # 1. SIGTERM to the front process (what a scheduler or `kill` sends)
    log = tmp_path / "first.log"
    front = _front(config, log.open("w"))
    _wait_for_step(run_dir, 3, front)
    tree = [p.pid for p in psutil.Process(front.pid).children(recursive=True)]
    assert len(tree) >= 3, tree                   # launch.py, two ranks (and the guardian)
    os.kill(front.pid, signal.SIGTERM)
    assert front.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert _alive(tree) == [], "processes of the run outlived koda train"
    first = _stopped_at(log)
    assert first >= 3 and checkpoint.resolve_tag(checkpoints) == checkpoint.tag_for(first)
    checkpoint.verify(checkpoints, checkpoint.tag_for(first))

    # 2. --resume, then SIGUSR1 to one rank only: the other learns it at the step boundary
    log = tmp_path / "second.log"
    front = _front(config, log.open("w"), "--resume")
    _wait_for_step(run_dir, first + 2, front)
    ranks = rank_processes(front.pid)
    assert len(ranks) == 2
    tree = [p.pid for p in psutil.Process(front.pid).children(recursive=True)]
    ranks[1].send_signal(signal.SIGUSR1)
    assert front.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert _alive(tree) == []
    text = log.read_text()
    assert f"resumed at step {first}" in text
    second = _stopped_at(log)
    assert second >= first + 2 and checkpoint.resolve_tag(checkpoints) == checkpoint.tag_for(second)
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(0, second + 1))    # one line per step, none lost or repeated across the stop


def test_sigusr1_to_koda_launch_stops_a_two_node_run_cleanly(tiny_data, tmp_path):
    """The multi-node path (one DeepSpeed launcher per node, here two on loopback) forwards
    the notice the same way: SLURM's USR1 to `koda launch` ends in a checkpoint and exit 0."""
    from tests.topology._topology_files import LOOPBACK

    run_dir, config = _long_run(tiny_data, tmp_path)
    log = tmp_path / "launch.log"
    proc = subprocess.Popen(launch_command(LOOPBACK, tmp_path / "hostfile", "--config", config), cwd=tmp_path,
                            env=rank_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for_step(run_dir, 3, proc)
    tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert len(rank_processes(proc.pid)) == 2
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert _alive(tree) == []
    stopped = _stopped_at(log)
    assert checkpoint.resolve_tag(run_dir / "checkpoints") == checkpoint.tag_for(stopped)


def test_ctrl_c_to_the_process_group_saves_and_exits_without_a_traceback(tiny_data, tmp_path):
    """A terminal's Ctrl-C: SIGINT to the front's whole process group. The ranks agree at the
    next step boundary, save, and everything exits 0 with no traceback."""
    run_dir, config = _long_run(tiny_data, tmp_path)
    log = tmp_path / "ctrl_c.log"
    front = _front(config, log.open("w"))
    _wait_for_step(run_dir, 3, front)
    tree = [p.pid for p in psutil.Process(front.pid).children(recursive=True)]
    os.killpg(front.pid, signal.SIGINT)
    assert front.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert _alive(tree) == [], "processes of the run outlived koda train"
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    stopped = int(re.findall(r"stopped at step (\d+)/\d+ on SIGINT", text)[0])
    assert checkpoint.resolve_tag(run_dir / "checkpoints") == checkpoint.tag_for(stopped)

    # a second Ctrl-C right after the first: everything stops at once, and whatever a save had
    # begun is not a checkpoint (no COMPLETE); every complete one still verifies
    log = tmp_path / "twice.log"
    front = _front(config, log.open("w"), "--resume")
    _wait_for_step(run_dir, stopped + 2, front)
    tree = [p.pid for p in psutil.Process(front.pid).children(recursive=True)]
    os.killpg(front.pid, signal.SIGINT)
    time.sleep(0.02)                  # the second press comes before the step boundary
    os.killpg(front.pid, signal.SIGINT)
    assert front.wait(timeout=120) != 0
    assert _alive(tree) == [], "processes of the run outlived a second Ctrl-C"
    assert "stopped at once on a second SIGINT" in log.read_text(), log.read_text()[-3000:]
    for tag in checkpoint.complete_tags(run_dir / "checkpoints"):
        checkpoint.verify(run_dir / "checkpoints", tag)


def test_nothing_outlives_a_front_process_killed_by_sigkill(tiny_data, tmp_path):
    """SIGKILL gives the front no chance to clean up: the guardian stops the launcher and the ranks."""
    run_dir, config = _long_run(tiny_data, tmp_path)
    log = tmp_path / "kill.log"
    front = _front(config, log.open("w"))
    _wait_for_step(run_dir, 2, front)
    tree = [p.pid for p in psutil.Process(front.pid).children(recursive=True)]
    assert len(rank_processes(front.pid)) == 2
    front.kill()
    front.wait()
    assert _alive(tree, timeout=40) == [], "the launcher or a rank was orphaned"
