"""Real 2-rank ZeRO-3 + AutoEP runs on CPU through DeepSpeed's launcher."""

import json

import pytest

from tests.helpers.ranks import launch, run_ranks
from tests.helpers.tiny import TINY, write_run_config

pytestmark = pytest.mark.slow


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_engine_module_is_autoep_and_each_rank_holds_half_the_experts(tiny_data, tmp_path):
    config = write_run_config(tmp_path / "run.yaml", tiny_data, tmp_path / "run", steps=10)
    results = run_ranks("tests.helpers.rank_jobs:autoep_structure", {"config_path": str(config)}, tmp_path / "out")
    for result in results:
        assert result["layer_type"] == "AutoEPMoELayer"
        assert result["ep_size"] == 2
        assert result["local_experts"] == TINY.n_experts // 2
    held = [set(r["held"]) for r in results]
    assert len(held[0]) == 2 and len(held[1]) == 2 and not held[0] & held[1]
    # the load statistics KODA logs count the experts AutoEP actually routed each token to
    for result in results:
        assert result["probe_counts"] == result["autoep_counts"], result
    assert results[0]["autoep_counts"] != results[1]["autoep_counts"]      # the ranks saw different tokens


def test_two_rank_training_loss_falls_and_writes_everything(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "run.yaml", tiny_data, run_dir, steps=40,
                              train={"eval_every": 20, "checkpoint_every": 20})
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = _metrics(run_dir)
    train = [r["train/ce"] for r in records if "train/ce" in r]
    val = [r["val/loss"] for r in records if "val/loss" in r]
    assert len(train) == 40 and len(val) == 3 and records[0]["step"] == 0    # untrained baseline first
    assert sum(train[-5:]) / 5 < sum(train[:5]) / 5 - 1.0
    assert val[0] > val[1] > val[2]
    last = records[-1]
    for key in ("train/lr", "train/grad_norm", "train/aux_loss", "perf/tokens_per_s", "perf/mfu",
                "moe/layer0/tokens", "moe/layer1/load_max_min", "mem/rss_gb"):
        assert key in last, key
    tokens = [r["moe/layer0/tokens"] for r in records if "train/ce" in r]
    assert last["moe/layer0/load_max_min"] == pytest.approx(max(tokens[-1]) / max(1, min(tokens[-1])))
    assert len({tuple(t) for t in tokens}) > 1                       # per-step counts, not a constant
    assert (run_dir / "checkpoints" / "latest").read_text() == "step00000040"
    assert (run_dir / "checkpoints" / "step00000040" / "COMPLETE").is_file()
    assert (run_dir / "checkpoints" / "step00000020" / "COMPLETE").is_file()
