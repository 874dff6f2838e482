"""K-FAC as the gradient transform of a ZeRO-3 + AutoEP engine on 2 ranks (dense layers)."""

import pytest

from tests.helpers.ranks import run_ranks
from tests.helpers.tiny import TINY


@pytest.mark.slow
def test_two_rank_zero3_dense_kfac_equals_one_process(tmp_path):
    results = run_ranks("tests.helpers.kfac_jobs:dense_kfac_under_zero3", {}, tmp_path)
    for rank, out in enumerate(results):
        units = out.pop("units")
        # attention projections and the router of every layer
        assert len(units) == TINY.n_layers * 5 and any(u.endswith("router.gate") for u in units)
        ours, ref = out.pop("kl_scale")
        assert abs(ours - ref) <= 1e-5 * ref
        for name, (diff, scale) in out.items():
            assert diff <= 1e-5 * scale and scale > 0, (rank, name, diff, scale)


@pytest.mark.slow
@pytest.mark.parametrize("update_rms", [False, True], ids=["kl-clip", "update-rms-raw-clip"])
def test_two_rank_zero3_autoep_kfac_with_experts_equals_one_rank(tmp_path, update_rms):
    """Experts included: 2 ranks (expert parallel 2, each rank 2 of the 4 experts, tokens from
    both ranks) against 1 rank (all experts local) on the same global batch, fp32. With
    update_rms, the raw-gradient clipping's norm comes from each rank's partitions: the
    parameters K-FAC leaves carry its coefficient, so a wrong norm shows there."""
    import torch

    one = run_ranks("tests.helpers.kfac_jobs:kfac_with_experts",
                    {"out_dir": str(tmp_path / "one"), "update_rms": update_rms}, tmp_path / "one", world=1)
    two = run_ranks("tests.helpers.kfac_jobs:kfac_with_experts",
                    {"out_dir": str(tmp_path / "two"), "update_rms": update_rms}, tmp_path / "two", world=2)
    if update_rms:
        assert one[0]["raw_norm"] > 0.5                        # the clip at 0.5 acted
        assert all(abs(out["raw_norm"] - one[0]["raw_norm"]) <= 1e-5 * one[0]["raw_norm"] for out in two)
    expected = torch.load(tmp_path / "one" / "grads0.pt")
    assert sum(1 for u in one[0]["units"] if ".experts.w" in u) == 3 * TINY.n_layers
    seen = set()
    for rank, out in enumerate(two):
        assert out["units"] == one[0]["units"]
        assert abs(out["kl_scale"] - one[0]["kl_scale"]) <= 1e-5 * one[0]["kl_scale"]
        got = torch.load(tmp_path / "two" / f"grads{rank}.pt")
        assert set(got) == set(expected)
        for name, (rows, g) in got.items():
            ref = expected[name][1] if rows is None else expected[name][1][rows]
            seen.update((name, r) for r in rows or [])
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(),
                                       msg=lambda m, n=name, r=rank: f"rank {r} {n}: {m}")
    assert len(seen) == 3 * TINY.n_layers * TINY.n_experts          # every expert checked once
