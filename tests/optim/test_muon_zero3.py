"""Muon as the gradient transform of a ZeRO-3 + AutoEP engine on 2 ranks, against one process."""

import pytest

from tests.helpers.muon_jobs import CLIP, STEPS, reference
from tests.helpers.ranks import run_ranks
from tests.helpers.tiny import TINY


@pytest.mark.slow
def test_two_rank_zero3_autoep_muon_equals_one_process(tmp_path):
    """Three steps on 2 ranks (expert parallel 2: each rank 2 of the 4 experts, momentum kept
    with them) give the weights of one plain process running Muon expert by expert, with
    AdamW on the rest and the raw gradients clipped, within 1e-5 (fp32)."""
    import torch

    results = run_ranks("tests.helpers.muon_jobs:muon_under_zero3", {"out_dir": str(tmp_path)}, tmp_path)
    expected, norms = reference()
    seen, bad = set(), {}
    for rank, out in enumerate(results):
        assert out["clip"] == 0.0                             # DeepSpeed's clipping moved into the transform
        assert sorted(map(tuple, out["groups"])) == [("adamw", 0.5), ("update", 1.0), ("update", 1.0)]
        assert sum(".experts.w" in n for n in out["matrices"]) == 3 * TINY.n_layers
        got = torch.load(tmp_path / f"weights{rank}.pt")
        assert set(got) == set(expected)
        for name, (rows, w) in got.items():
            ref = expected[name] if rows is None else expected[name][rows]
            seen.update((name, r) for r in rows or [])
            err = float(((w - ref).abs() - 1e-5 * ref.abs()).max() / ref.abs().max())
            if err > 1e-5:
                bad[f"rank {rank} {name}"] = err
    assert not bad, f"weights off by more than 1e-5 (relative to the largest): {bad}"
    assert all(n > CLIP for n in norms)                       # the clip acted on every step
    for out in results:
        assert out["norms"] == pytest.approx(norms, rel=1e-5)
    assert len(seen) == 3 * TINY.n_layers * TINY.n_experts    # every expert checked once
    assert STEPS > 1                                          # momentum carried across steps
