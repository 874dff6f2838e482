"""``koda train`` with ``optimizer: {name: muon}`` on 2 ranks (ZeRO-3 + AutoEP): Muon runs as
the engine's gradient transform under DeepSpeed's schedule, and a run killed with SIGKILL and
resumed continues exactly on the uninterrupted run's trajectory.

Momentum 0.95 makes a lost buffer visible: a resumed run that started Muon afresh would
orthogonalise the bare gradient instead of the momentum-weighted one and leave the reference
trajectory at its first step, as would a lost AdamW moment.
"""

import pytest

from tests.helpers.kill_resume import kill_then_resume_matches, straight_run
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow
STEPS, EVERY, LR = 12, 3, 0.01
MUON = {"name": "muon", "lr": LR, "weight_decay": 0.1, "muon": {"momentum": 0.95, "adamw_lr": 3e-3}}


def _config(tmp_path, tiny_data, name, checkpoint_every):
    return write_run_config(tmp_path / f"{name}.yaml", tiny_data, tmp_path / name, steps=STEPS,
                            train={"checkpoint_every": checkpoint_every, "eval_every": STEPS}, optimizer=MUON)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("muon-straight")
    return straight_run(_config(root, tiny_data, "run", STEPS), root / "run", STEPS)


def test_muon_trains_under_the_configured_schedule(reference):
    """DeepSpeed's WarmupCosineLR scaled optimizer.lr; train/grad_norm is the raw gradient's
    (the smoke config's clipping 1.0 acts on it in the transform), and the loss falls."""
    trained = reference[1:]
    lrs = [r["train/lr"] for r in trained]
    assert max(lrs) == pytest.approx(LR) and lrs[-1] < max(lrs), lrs      # warm-up to LR, then cosine decay
    assert all(0 < r["train/grad_norm"] < float("inf") for r in trained)
    assert trained[-1]["train/ce"] < trained[0]["train/ce"], [r["train/ce"] for r in trained]


def test_kill_9_and_resume_continue_muon_exactly(reference, tiny_data, tmp_path):
    kill_then_resume_matches(_config(tmp_path, tiny_data, "run", EVERY), tmp_path / "run", EVERY, STEPS, reference,
                             tmp_path / "log")
