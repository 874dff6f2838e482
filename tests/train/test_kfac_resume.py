"""``koda train`` with ``optimizer: {name: kfac}`` on 2 ranks (ZeRO-3 + AutoEP): K-FAC runs as
the engine's gradient transform under DeepSpeed's schedule, and a run killed with SIGKILL and
resumed continues exactly on the uninterrupted run's trajectory.

The schedule makes a lost preconditioner visible: factors are updated every step (a running
average over all steps so far) and decomposed every second one, so a resumed run that started
K-FAC afresh (step counter 0, empty factors) would decompose other factors and leave the
reference trajectory, as would a lost momentum buffer.
"""

import pytest

from tests.helpers.kfac_settings import TEXTBOOK
from tests.helpers.kill_resume import kill_then_resume_matches, straight_run
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow
STEPS, EVERY, LR = 12, 3, 0.05
KFAC = {"name": "kfac", "lr": LR, "momentum": 0.9,
        "kfac": {**TEXTBOOK, "inv_update_steps": 2, "damping": 1e-2, "kl_clip": 1e-2}}


def _config(tmp_path, tiny_data, name, checkpoint_every):
    return write_run_config(tmp_path / f"{name}.yaml", tiny_data, tmp_path / name, steps=STEPS,
                            train={"checkpoint_every": checkpoint_every, "eval_every": STEPS}, optimizer=KFAC)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("kfac-straight")
    return straight_run(_config(root, tiny_data, "run", STEPS), root / "run", STEPS)


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
    kill_then_resume_matches(_config(tmp_path, tiny_data, "run", EVERY), tmp_path / "run", EVERY, STEPS, reference,
                             tmp_path / "log")
