"""``koda train`` with ``optimizer: {name: kfac}`` on 2 ranks (ZeRO-3 + AutoEP): K-FAC runs as
the engine's gradient transform under DeepSpeed's schedule, and a run killed with SIGKILL and
resumed continues exactly on the uninterrupted run's trajectory.

The schedule makes a lost preconditioner visible: factors are updated every step (a running
average over all steps so far) and decomposed every second one, so a resumed run that started
K-FAC afresh (step counter 0, empty factors) would decompose other factors and leave the
reference trajectory, as would a lost momentum buffer.
"""

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
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow
STEPS, EVERY, LR = 12, 3, 0.05
UNTIMED = re.compile(r"^(time|perf/.*|mem/.*)$")
KFAC = {"name": "kfac", "lr": LR, "momentum": 0.9,
        "kfac": {"factor_update_steps": 1, "inv_update_steps": 2, "damping": 1e-2, "kl_clip": 1e-2}}


def _config(tmp_path, tiny_data, name, checkpoint_every):
    return write_run_config(tmp_path / f"{name}.yaml", tiny_data, tmp_path / name, steps=STEPS,
                            train={"checkpoint_every": checkpoint_every, "eval_every": STEPS}, optimizer=KFAC)


def _cmd(config, *extra):
    return [sys.executable, "-m", "koda", "train", "--config", str(config), *extra]


def _records(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _kill_job(proc) -> None:
    """SIGKILL to the front process and every process under it: ``koda train`` starts DeepSpeed's
    launcher in a session of its own, so the front's process group does not reach the ranks."""
    job = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    for p in job:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            p.kill()
    proc.wait()
    _, alive = psutil.wait_procs([p for p in job if p is not proc], timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("kfac-straight")
    proc = subprocess.run(_cmd(_config(root, tiny_data, "run", STEPS)), cwd=REPO, env=rank_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = _records(root / "run")
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    return records


def test_kfac_runs_under_the_configured_schedule(reference):
    """The preconditioner ran every step (its KL scale is logged) and DeepSpeed's WarmupCosineLR
    scaled optimizer.lr (not the DeepSpeed config's optimizer lr, 3e-3, whose section was dropped)."""
    trained = reference[1:]
    assert all(0 < r["kfac/kl_scale"] <= 1 for r in trained)
    assert any(r["kfac/kl_scale"] < 1 for r in trained), "the KL clip never acted: K-FAC looks idle"
    lrs = [r["train/lr"] for r in trained]
    assert max(lrs) == pytest.approx(LR) and lrs[-1] < max(lrs), lrs      # warm-up to LR, then cosine decay
    assert all(r["train/ce"] == r["train/ce"] for r in trained)           # finite


def test_kill_9_and_resume_continue_kfac_exactly(reference, tiny_data, tmp_path):
    run_dir, config = tmp_path / "run", _config(tmp_path, tiny_data, "run", EVERY)
    log = tmp_path / "log"
    proc = subprocess.Popen(_cmd(config), cwd=REPO, env=rank_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while max((r["step"] for r in _records(run_dir)), default=0) <= EVERY:      # logged after the save at EVERY
        if proc.poll() is not None or time.time() > deadline:
            _kill_job(proc)
            pytest.fail(f"the run ended or stalled before step {EVERY + 1}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    _kill_job(proc)
    killed_at = max(r["step"] for r in _records(run_dir))
    resumed_at = int(checkpoint.resolve_tag(run_dir / "checkpoints").removeprefix("step"))
    assert resumed_at % EVERY == 0 and 0 < resumed_at <= killed_at < STEPS, (resumed_at, killed_at)

    resumed = subprocess.run(_cmd(config, "--resume"), cwd=REPO, env=rank_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed at step {resumed_at}" in resumed.stdout, resumed.stdout[-3000:]
    records = _records(run_dir)
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    for mine, theirs in zip(records, reference, strict=True):
        keys = {k for k in mine if not UNTIMED.match(k)}
        assert keys == {k for k in theirs if not UNTIMED.match(k)}, mine["step"]
        for key in keys:
            assert mine[key] == theirs[key], (mine["step"], key, mine[key], theirs[key])
