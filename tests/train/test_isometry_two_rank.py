"""The orthogonality penalty under 2-rank ZeRO-3 + AutoEP equals the one-process penalty of the
same full weights, its update is the one-process update (experts included), and it lowers the
deviation from isometry that cross-entropy alone leaves in place."""

import pytest

from tests.helpers.isometry_jobs import STEPS
from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow


def test_two_rank_penalty_value_update_and_effect_match_one_process(tmp_path):
    ranks = run_ranks("tests.helpers.isometry_jobs:ortho_under_zero3", {"lam": 1.0}, tmp_path)
    out = ranks[0]
    # q_proj, o_proj and experts.w1 of both layers, found in AutoEP's layout inside the engine
    assert sorted(n.split(".", 3)[3] for n in out["names"]) == sorted(["self_attn.q_proj.weight",
                                                                      "self_attn.o_proj.weight",
                                                                      "mlp.experts.w1"] * 2)
    value, reference = out["value"]
    assert value == pytest.approx(reference, rel=1e-5)
    for r in ranks:
        assert r["value"] == out["value"]
        for name, (error, change) in r["update"].items():
            # the step moved every selected weight, by exactly -LR x lam x dP/dW (an expert
            # term left unscaled would move expert weights half as far: error = change / 2)
            assert change > 1e-4, name
            assert error < 1e-3 * change, (name, error, change)
    with_penalty, without = out["with"], out["without"]
    assert len(with_penalty) == STEPS and with_penalty[0] == pytest.approx(without[0])
    assert all(b < a for a, b in zip(with_penalty, with_penalty[1:], strict=False))
    assert with_penalty[-1] < 0.9 * with_penalty[0]
    assert without[-1] > 0.98 * without[0]
