"""GradientAccess: full, local-experts and ZeRO-partition views of gradients, shape checks on
every write, and the Engine's accumulation-boundary contract for gradient transforms."""

import pytest
import torch

from koda.distributed.gradients import GradientAccess
from koda.errors import KodaError
from tests.helpers.gradient_jobs import SCALED
from tests.helpers.ranks import run_ranks
from tests.helpers.tiny import TINY


def _plain():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model(torch.randn(5, 4)).sum().backward()
    return model, GradientAccess(model)


def test_plain_module_gradients_round_trip_and_wrong_shapes_are_one_line_errors():
    model, grads = _plain()
    assert grads.shape("0.weight") == (3, 4) and not grads.is_expert("0.weight")
    assert torch.equal(grads.get("0.weight"), model[0].weight.grad)
    grads.set("0.weight", torch.ones(3, 4))
    assert torch.equal(model[0].weight.grad, torch.ones(3, 4))
    with pytest.raises(KodaError, match=r"^gradients.set\(0.weight\): expected shape \[3, 4\], got \[4, 3\]$"):
        grads.set("0.weight", torch.ones(4, 3))
    with pytest.raises(KodaError, match=r"expected shape \[3, 4\], got \[12\]"):
        grads.set("0.weight", torch.ones(12))             # same numel, wrong shape: still refused
    assert torch.equal(model[0].weight.grad, torch.ones(3, 4))
    with pytest.raises(KodaError, match="not an expert parameter"):
        grads.get_experts("1.bias")
    with pytest.raises(KodaError, match="not a ZeRO-3 partitioned parameter"):
        grads.get_local("1.bias")
    with pytest.raises(KodaError, match="no trainable parameter 'nope'"):
        grads.get("nope")


@pytest.mark.slow
def test_two_rank_autoep_gradients_equal_one_process_and_transforms_change_exactly_their_layer(tmp_path):
    """Every gradient (experts included, by AutoEP's names) on 2 ranks with AutoEP and 2
    accumulation steps equals one process's on the same global batch within 1e-6 (fp32, no
    balancing loss: the router probe's term is not batch-additive); the transform's scaled
    parameters, and only they, get a scaled SGD update."""
    results = run_ranks("tests.helpers.gradient_jobs:autoep_gradients", {"accum": 2}, tmp_path)
    F, D, E = TINY.ffn_hidden, TINY.d_model, TINY.n_experts
    rows = []
    for rank, out in enumerate(results):
        assert out["calls"] == 1 and out["stepped"] == [False, True]
        assert len(out["grad"]) == 2 * 10 + 3                     # every trainable parameter, once
        for name, (diff, scale, _) in out["grad"].items():
            assert diff <= 1e-6 and scale > 1e-4, (rank, name, diff, scale)
        assert out["grad"]["model.layers.0.mlp.experts.w1"][2] == [E, F, D]       # full, not E/ep
        assert out["grad"]["model.layers.1.mlp.experts.w2"][2] == [E, D, F]
        assert out["grad"]["model.layers.0.mlp.router.gate.weight"][2] == [E, D]
        assert set(out["experts"]) == {f"model.layers.{i}.mlp.experts.w{j}" for i in (0, 1) for j in (1, 2, 3)}
        assert max(out["experts"].values()) <= 1e-6
        for name, (start, n, total, diff) in out["local"].items():
            assert diff <= 1e-6 and n > 0, (rank, name)
            # dense parameters are split over both ranks; this rank's experts sit on it alone
            assert (start, n) == ((0, total) if name in out["experts"] else (rank * total // 2, total // 2)), name
        for name, diff in out["update"].items():
            assert diff <= 1e-6, (rank, name, diff, SCALED.get(name))
        assert len(out["errors"]) == 3
        assert "gradients.set(model.layers.1.mlp.experts.w2): expected shape [4, 64, 96], got [1, 64, 96]" \
            in out["errors"][0]
        assert "set_experts(model.layers.0.mlp.experts.w1): expected shape [2, 96, 64], got [4, 96, 64]" \
            in out["errors"][1]
        assert "set_local(model.layers.0.self_attn.q_proj.weight): expected shape [2048], got [2047]" \
            in out["errors"][2]
        message, calls = out["held_back"]
        assert calls == 1 and "2 micro-batches without a gradient accumulation boundary" in message
        rows.append(out["rows"]["model.layers.0.mlp.experts.w1"])
    assert sorted(rows[0] + rows[1]) == list(range(E)) and rows[0] == sorted(rows[0])   # contiguous blocks


@pytest.mark.slow
def test_transforms_are_refused_when_deepspeed_reports_no_boundary_before_step(tmp_path):
    results = run_ranks("tests.helpers.gradient_jobs:unmanaged_accumulation", {}, tmp_path)
    for message in results:
        assert message is not None and "need managed_gradient_accumulation" in message
