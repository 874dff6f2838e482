"""``koda train`` with ``optimizer: {name: muon}`` on 2 ranks (ZeRO-3 + AutoEP): Muon runs as
the engine's gradient transform under DeepSpeed's schedule, and a run killed with SIGKILL and
resumed continues exactly on the uninterrupted run's trajectory.

Momentum 0.95 makes a lost buffer visible: a resumed run that started Muon afresh would
orthogonalise the bare gradient instead of the momentum-weighted one and leave the reference
trajectory at its first step, as would a lost AdamW moment.
"""

import subprocess
import time

import pytest

from koda.distributed import checkpoint
from tests.helpers.ranks import REPO, rank_env
from tests.helpers.tiny import write_run_config
from tests.train.test_kfac_resume import UNTIMED, _cmd, _kill_job, _records

pytestmark = pytest.mark.slow
STEPS, EVERY, LR = 12, 3, 0.01
MUON = {"name": "muon", "lr": LR, "weight_decay": 0.1, "muon": {"momentum": 0.95, "adamw_lr": 3e-3}}


def _config(tmp_path, tiny_data, name, checkpoint_every):
    return write_run_config(tmp_path / f"{name}.yaml", tiny_data, tmp_path / name, steps=STEPS,
                            train={"checkpoint_every": checkpoint_every, "eval_every": STEPS}, optimizer=MUON)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("muon-straight")
    proc = subprocess.run(_cmd(_config(root, tiny_data, "run", STEPS)), cwd=REPO, env=rank_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = _records(root / "run")
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    return records


def test_muon_trains_under_the_configured_schedule(reference):
    """DeepSpeed's WarmupCosineLR scaled optimizer.lr; train/grad_norm is the raw gradient's
    (the smoke config's clipping 1.0 acts on it in the transform), and the loss falls."""
    trained = reference[1:]
    lrs = [r["train/lr"] for r in trained]
    assert max(lrs) == pytest.approx(LR) and lrs[-1] < max(lrs), lrs      # warm-up to LR, then cosine decay
    assert all(0 < r["train/grad_norm"] < float("inf") for r in trained)
    assert trained[-1]["train/ce"] < trained[0]["train/ce"], [r["train/ce"] for r in trained]


def test_kill_9_and_resume_continue_muon_exactly(reference, tiny_data, tmp_path):
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
