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
