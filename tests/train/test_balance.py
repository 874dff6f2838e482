"""KODA's balancing loss is what keeps AutoEP's experts evenly loaded (AutoEP has none)."""

import json
import statistics

import pytest

from tests.helpers.ranks import launch
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow


def _second_half_load(tiny_data, tmp_path, weight):
    run_dir = tmp_path / f"aux-{weight}"
    config = write_run_config(tmp_path / f"aux-{weight}.yaml", tiny_data, run_dir, steps=60,
                              moe={"aux_loss_weight": weight}, train={"eval_every": 60, "checkpoint_every": 60},
                              model={"init_std": 0.2})       # a sharper router at init: collapse shows early
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loads = [r["moe/load_max_min"] for r in records if "moe/load_max_min" in r]
    return statistics.mean(loads[len(loads) // 2:])


def test_balancing_loss_bounds_the_expert_load_ratio(tiny_data, tmp_path):
    without = _second_half_load(tiny_data, tmp_path, 0.0)
    balanced = _second_half_load(tiny_data, tmp_path, 0.5)
    assert balanced < 3.0, balanced
    assert without > 2 * balanced, (without, balanced)
