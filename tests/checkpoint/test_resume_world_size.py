"""Resume on another world size: 2 ranks -> 1 rank -> 2 ranks, against the uninterrupted
2-rank run. The global batch is the same in every layout (2 ranks x micro 2, or 1 rank x
micro 2 x accumulation 2), so each step's loss is a mean over the same 4 sequences and
must agree up to the order of floating-point reductions."""

import json
import shutil

import pytest

from koda.distributed import checkpoint
from tests.checkpoint.conftest import fp32_run_config
from tests.helpers.ranks import launch

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4


def _metrics(run_dir) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _resume(source_ckpts, tag, config, run_dir, world):
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(source_ckpts / tag, run_dir / "checkpoints" / tag)
    proc = launch(["koda.train", "--config", str(config), "--resume-tag", tag], world=world)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _compare(resumed, base, steps):
    worst = 0.0
    for step in steps:
        for key in ("train/ce", "train/loss"):
            diff = abs(resumed[step][key] - base[step][key])
            assert diff < TOLERANCE, (step, key, resumed[step][key], base[step][key])
            worst = max(worst, diff)
    return worst


def test_two_rank_checkpoint_continues_on_one_rank_and_back_on_two(trained_run, tmp_path):
    base = trained_run.metrics()

    one = tmp_path / "one"
    config = fp32_run_config(tmp_path / "one.yaml", trained_run.data, one, world=1, micro=2, accum=2)
    out = _resume(trained_run.checkpoints, "step00000002", config, one, world=1)
    assert "world 1, expert-parallel 1" in out and "resumed at step 2 (world size 2 -> 1" in out
    resumed = _metrics(one)
    assert sorted(resumed) == [3, 4, 5, 6]
    print(f"2 -> 1 ranks: next-step loss diff {abs(resumed[3]['train/ce'] - base[3]['train/ce']):.2e}, "
          f"max over steps 3-6 {_compare(resumed, base, range(3, 7)):.2e}")
    # the universal copy lives inside the tag it came from; the tag still verifies
    assert (one / "checkpoints" / "step00000002" / "actor" / "universal" / "actor" / "zero").is_dir()
    checkpoint.verify(one / "checkpoints", "step00000002")

    two = tmp_path / "two"
    config = fp32_run_config(tmp_path / "two.yaml", trained_run.data, two, world=2, micro=2, accum=1)
    out = _resume(one / "checkpoints", "step00000004", config, two, world=2)
    assert "world 2, expert-parallel 2" in out and "resumed at step 4 (world size 1 -> 2" in out
    resumed = _metrics(two)
    assert sorted(resumed) == [5, 6]
    print(f"1 -> 2 ranks: next-step loss diff {abs(resumed[5]['train/ce'] - base[5]['train/ce']):.2e}, "
          f"max over steps 5-6 {_compare(resumed, base, range(5, 7)):.2e}")


def test_the_universal_path_is_taken_exactly_when_the_layout_changes(trained_run):
    from koda.distributed import universal
    from koda.distributed.ds_config import DeepSpeedPlan

    def plan(world, ep):
        config = {"expert_parallel": {"enabled": True, "autoep_size": ep}}
        return DeepSpeedPlan(config=config, world=world, micro_batch=2, grad_accum=1, ep_size=ep,
                             precision="fp32", zero_stage=3)

    assert universal.needed(trained_run.checkpoints, "step00000002", plan(2, 2)) is None
    assert universal.needed(trained_run.checkpoints, "step00000002", plan(1, 1)) == "world size 2 -> 1"
    assert universal.needed(trained_run.checkpoints, "step00000002", plan(2, 1)) == "expert-parallel size 2 -> 1"
    assert universal.enable(plan(2, 2)).config["checkpoint"] == {"load_universal": True}
