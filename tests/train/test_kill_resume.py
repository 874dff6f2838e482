"""Real crashes of a 2-rank ZeRO-3 + AutoEP run, then ``--resume``.

Each test starts ``koda train`` (front process, DeepSpeed's launcher, two ranks) in its own
session, kills part of it with SIGKILL, and checks through the public behaviour only (the
CLI's output, ``checkpoint.resolve_tag``, ``metrics.jsonl``): which checkpoint is chosen,
that the resumed run says where it resumed and continues from there, and that every
deterministic metric of every step equals the uninterrupted run's. A resume that silently
started again from step 0 would still end with the same losses (the run is deterministic);
the step list, the untouched prefix of the metrics file and the "resumed at step N" line are
what tell it apart.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from koda.distributed import checkpoint
from koda.errors import KodaError
from tests.helpers.ranks import REPO, rank_env
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow
STEPS = 20
# Metrics that depend on the wall clock or the process, not on the trajectory.
UNTIMED = re.compile(r"^(time|perf/.*|mem/.*)$")


def _config(tmp_path, tiny_data, name, checkpoint_every):
    return write_run_config(tmp_path / f"{name}.yaml", tiny_data, tmp_path / name, steps=STEPS,
                            train={"checkpoint_every": checkpoint_every, "eval_every": 10})


def _train(config, *extra, timeout=600) -> subprocess.CompletedProcess:
    """`koda train --config CONFIG ...` to completion."""
    return subprocess.run([sys.executable, "-m", "koda", "train", "--config", str(config), *extra], cwd=REPO,
                          env=rank_env(), capture_output=True, text=True, timeout=timeout)


def _start(config, log, *extra) -> subprocess.Popen:
    """`koda train` in a session of its own (so the whole job can be killed), output to `log`."""
    return subprocess.Popen([sys.executable, "-m", "koda", "train", "--config", str(config), *extra], cwd=REPO,
                            env=rank_env(), stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def _lines(run_dir) -> list[str]:
    path = run_dir / "metrics.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def _steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in _lines(run_dir)]


def _wait_until(proc, log, condition, what, timeout=300, poll=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(poll)
    _kill_job(proc)
    pytest.fail(f"timed out waiting for {what}")


def _kill_job(proc):
    """SIGKILL every process of the job at once, the ranks first (a machine going down):
    `koda train` starts DeepSpeed's launcher in a session of its own, so the front's process
    group alone would leave the ranks running."""
    try:
        job = psutil.Process(proc.pid).children(recursive=True)[::-1] + [psutil.Process(proc.pid)]
    except psutil.Error:        # the front is gone already (killed by pid)
        job = []
    for process in job:
        with contextlib.suppress(psutil.Error):
            process.kill()
    proc.wait()
    psutil.wait_procs(job, timeout=30)


def _tag_step(tag: str) -> int:
    return int(re.fullmatch(r"step(\d+)", tag).group(1))


def _assert_resumed(run_dir, config, before: list[str], resumed_at: int, reference) -> None:
    """Resume the run and check it continued from `resumed_at` on the reference trajectory.

    before: the metrics lines written up to the crash."""
    proc = _train(config, "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resumed at step {resumed_at}" in proc.stdout, proc.stdout[-3000:]
    assert "starting from step 0" not in proc.stdout
    lines = _lines(run_dir)
    steps = [json.loads(line)["step"] for line in lines]
    # every step once, in order: nothing up to the checkpoint was logged again
    assert steps == list(range(STEPS + 1)), steps
    # the records up to the checkpoint are the crashed run's own lines, untouched
    kept = [line for line in before if json.loads(line)["step"] <= resumed_at]
    assert lines[:resumed_at + 1] == kept
    records = [json.loads(line) for line in lines]
    for mine, theirs in zip(records, reference, strict=True):
        keys = {k for k in mine if not UNTIMED.match(k)}
        assert keys == {k for k in theirs if not UNTIMED.match(k)}, mine["step"]
        for key in keys:
            assert mine[key] == theirs[key], (mine["step"], key, mine[key], theirs[key])
    assert checkpoint.resolve_tag(run_dir / "checkpoints") == checkpoint.tag_for(STEPS)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> list[dict]:
    """Metrics records of the uninterrupted run (checkpoints only at the end: saving does not
    change the trajectory, which the resumed runs below confirm)."""
    root = tmp_path_factory.mktemp("straight")
    proc = _train(_config(root, tiny_data, "run", checkpoint_every=STEPS))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in _lines(root / "run")]
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    return records


def test_kill_9_of_one_rank_ends_the_job_and_resume_continues(reference, tiny_data, tmp_path):
    """The other rank must not wait forever in a collective: the job ends within a bounded
    time, with a failure status, leaving the last complete checkpoint loadable."""
    run_dir, config = tmp_path / "run", _config(tmp_path, tiny_data, "run", checkpoint_every=4)
    proc = _start(config, tmp_path / "log")
    _wait_until(proc, tmp_path / "log", lambda: max(_steps(run_dir), default=0) >= 6, "step 6")
    job = psutil.Process(proc.pid).children(recursive=True)
    ranks = {rank: [p for p in job if f"--local_rank={rank}" in p.cmdline()] for rank in (0, 1)}
    assert len(ranks[0]) == 1 and len(ranks[1]) == 1, job
    started = time.monotonic()
    ranks[1][0].kill()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        _kill_job(proc)
        pytest.fail("rank 1 was killed, and the job still ran 120 s later (a hang)")
    ended = time.monotonic() - started
    print(f"job ended {ended:.1f} s after rank 1 was killed")
    assert proc.returncode != 0
    gone, alive = psutil.wait_procs(job, timeout=30)
    assert not alive, f"still running after the job ended: {alive}"
    before = _lines(run_dir)
    killed_at = max(_steps(run_dir))
    assert killed_at < STEPS, "the kill came too late to test anything"
    resumed_at = _tag_step(checkpoint.resolve_tag(run_dir / "checkpoints"))
    assert resumed_at % 4 == 0 and killed_at - 8 < resumed_at <= killed_at, (resumed_at, killed_at)
    _assert_resumed(run_dir, config, before, resumed_at, reference)


def test_kill_9_of_the_whole_job_during_a_real_save_resumes_from_the_previous_checkpoint(
        reference, tiny_data, tmp_path):
    """Saves every step; the whole job is killed once a tag directory holds files but is not
    complete yet (DeepSpeed is writing it). That tag must not be chosen; the one before it is,
    and the resumed run drops the metrics line the killed run logged after it."""
    run_dir, config = tmp_path / "run", _config(tmp_path, tiny_data, "run", checkpoint_every=1)
    ckpt, log = run_dir / "checkpoints", tmp_path / "log"

    def newest_tag() -> str | None:
        tags = [e.name for e in os.scandir(ckpt) if e.name.startswith("step")] if ckpt.is_dir() else []
        return max(tags, default=None)

    def saving() -> bool:
        """The newest tag (step 3 or later) exists but has no COMPLETE yet: DeepSpeed is writing it."""
        tag = newest_tag()
        return tag is not None and _tag_step(tag) >= 3 and not (ckpt / tag / checkpoint.COMPLETE).exists()

    # A save lasts tens of milliseconds: the job's processes are listed beforehand so the kill is
    # a few system calls. Should it still land after COMPLETE, the run resumes and the next
    # save is tried (three times at most), so the test never passes without a real partial save.
    for attempt in range(3):
        proc = _start(config, log, *(["--resume"] if attempt else []))
        started = max(_steps(run_dir), default=-1)
        _wait_until(proc, log, lambda s=started: max(_steps(run_dir), default=-1) > s, "a training step")
        pids = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)[::-1]] + [proc.pid]
        _wait_until(proc, log, saving, "a save in progress at step 3 or later", poll=0.001)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _kill_job(proc)
        tag = newest_tag()
        if tag not in checkpoint.complete_tags(ckpt):
            break
    else:
        pytest.fail("three kills all came after the save completed")
    with pytest.raises(KodaError, match="incomplete"):
        checkpoint.resolve_tag(ckpt, tag)
    chosen = checkpoint.resolve_tag(ckpt)
    assert chosen == checkpoint.tag_for(_tag_step(tag) - 1)
    before = _lines(run_dir)
    assert max(_steps(run_dir)) == _tag_step(tag)       # logged, then killed while saving
    _assert_resumed(run_dir, config, before, _tag_step(chosen), reference)
