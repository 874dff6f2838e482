"""Partitioned construction on 2 real CPU ranks: same weights and losses as a whole-model
build, no rank ever holding the whole model, and several networks in one process."""

import pytest

from tests.helpers.construct_jobs import BIG
from tests.helpers.ranks import run_ranks
from tests.helpers.tiny import TINY

pytestmark = pytest.mark.slow


def test_partitioned_actor_equals_the_whole_model_build(tmp_path):
    """AutoEP replaces the partitioned MoE blocks, each rank holds its own experts only, every
    weight equals a plain KodaForCausalLM's from the same seed (rounded once in bf16), and the
    losses of three steps equal the whole-model path's exactly; in fp32 and in bf16 (both built
    in one launch per path)."""
    runs = {}
    for full in (False, True):
        runs[full] = run_ranks("tests.helpers.construct_jobs:actor_against_plain_builds", {"full_build": full},
                               tmp_path / f"full{full}")
    for dtype in ("fp32", "bf16"):
        for results in runs.values():
            assert sorted(r[dtype]["ep_rank"] for r in results) == [0, 1]
            for r in results:
                assert r[dtype]["layer_type"] == "AutoEPMoELayer" and r[dtype]["local_experts"] == TINY.n_experts // 2
                assert r[dtype]["compared"] > 10 and r[dtype]["mismatched"] == [], dtype
        assert runs[False][0][dtype]["losses"] == runs[True][0][dtype]["losses"], dtype
        assert runs[False][0][dtype]["losses"][2] < runs[False][0][dtype]["losses"][0], dtype
    assert runs[False][0]["fp32"]["losses"] != runs[False][0]["bf16"]["losses"]      # bf16 did take effect


def test_construction_never_holds_the_whole_model(tmp_path):
    """BIG is 448 MiB in fp32. Built whole on every rank (the old path) a rank's resident memory
    grows by at least that; built partitioned, by its share (half) plus one module plus
    DeepSpeed's own buffers (~310 MiB measured). The limit, 80% of the whole, sits between."""
    full_fp32 = 4 * sum(p.numel() for p in _plain_big_parameters())
    limit = full_fp32 * 4 // 5
    new = run_ranks("tests.helpers.construct_jobs:construction_peak", {"full_build": False}, tmp_path / "new")
    old = run_ranks("tests.helpers.construct_jobs:construction_peak", {"full_build": True}, tmp_path / "old")
    for r in new + old:
        assert r["layer_type"] == "AutoEPMoELayer"
    growth = {"partitioned": [r["growth"] for r in new], "whole": [r["growth"] for r in old]}
    print(f"full fp32 {full_fp32 / 2**20:.0f} MiB, limit {limit / 2**20:.0f} MiB, growth per rank (MiB): "
          + ", ".join(f"{k} {[round(g / 2**20) for g in v]}" for k, v in growth.items()))
    assert all(g < limit for g in growth["partitioned"]), growth
    assert all(g > limit for g in growth["whole"]), growth      # the limit does tell the two paths apart


def _plain_big_parameters():
    import torch

    from koda.model import KodaForCausalLM

    with torch.device("meta"):
        return list(KodaForCausalLM(BIG).parameters())


def test_two_networks_built_and_trained_in_one_process(tmp_path):
    results = run_ranks("tests.helpers.construct_jobs:two_networks_in_one_process", {}, tmp_path / "out")
    for r in results:
        assert r["unchanged"] == {"actor": [], "critic": []}, f"rank {r['rank']}: parameters that did not move"
        local, full = r["partitioned"]["embed.weight"]        # [512, 64]: split across the 2 ranks
        assert full == TINY.vocab_size * 64 and local == full // 2
        assert "build one network at a time" in r["refused"]
