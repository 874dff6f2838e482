"""K-FAC factors of DeepSpeed AutoEP's GroupedExperts (one process): the rows reach the
experts through DeepSpeed's own alignment padding, and must match a per-expert dense
reference computed from the routed tokens alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koda.model.moe import route
from koda.optim import KFACPreconditioner, ParamGrads
from tests.helpers.kfac_settings import textbook

ep_experts = pytest.importorskip("deepspeed.moe.ep_experts")
auto_ep_layer = pytest.importorskip("deepspeed.module_inject.auto_ep_layer")

D, FF, E, K = 16, 24, 4, 2


class Layer(nn.Module):
    """The ep_size == 1 path of AutoEPMoELayer: route, group rows by expert with DeepSpeed's
    padding, run GroupedExperts, undo the grouping, weight by the scores after the experts."""

    score_apply = "post"

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(D, E, bias=False)
        self.experts = ep_experts.GroupedExperts(D, FF, E, use_grouped_mm=False)

    def forward(self, hidden):                                        # [B, S, D]
        x = hidden.reshape(-1, D)
        weights, experts = route(self.gate(x), K)
        order = torch.argsort(experts.reshape(-1), stable=True)
        rows = x[order // K]
        counts = torch.bincount(experts.reshape(-1), minlength=E)
        permuted, perm, aligned, n = auto_ep_layer.permute_by_local_expert(rows, counts)
        out = auto_ep_layer.unpermute_by_local_expert(self.experts(permuted, aligned), perm, n)
        scale = weights.reshape(-1)[order][:, None]
        return torch.zeros_like(x).index_add(0, order // K, out * scale).view_as(hidden)


def test_grouped_experts_factors_exclude_padding_and_match_a_dense_reference():
    torch.manual_seed(0)
    layer = Layer()
    for p in layer.parameters():
        nn.init.normal_(p, std=0.3)
    hidden, target = torch.randn(2, 9, D), torch.randn(2, 9, D)
    pre = KFACPreconditioner(layer, textbook(kl_clip=None, skip=("gate",)))
    F.mse_loss(layer(hidden), target).backward()
    raw = {n: p.grad.clone() for n, p in layer.named_parameters()}
    pre.step(ParamGrads(layer))
    units = {u.name: u for u in pre.units}
    assert set(units) == {"experts.w1", "experts.w3", "experts.w2"}

    # reference: each expert's rows alone, autograd on every matmul
    x = hidden.reshape(-1, D)
    weights, experts = route(layer.gate(x), K)
    out, kept = torch.zeros_like(x), {}
    w1, w3, w2 = (getattr(layer.experts, w).detach().requires_grad_() for w in ("w1", "w3", "w2"))
    for e in range(E):
        token, slot = (experts == e).nonzero(as_tuple=True)
        rows = x[token].detach()
        gate, up = rows @ w1[e].t(), rows @ w3[e].t()
        h = F.silu(gate) * up
        y = h @ w2[e].t()
        for t in (gate, up, y):
            t.retain_grad()
        out = out.index_add(0, token, weights[token, slot][:, None].detach() * y)
        kept[e] = (rows, gate, up, h.detach(), y)
    F.mse_loss(out, target.reshape_as(out)).backward()
    torch.testing.assert_close(w1.grad, raw["experts.w1"])
    N = x.shape[0]
    assert any(r.shape[0] % 8 for r, *_ in kept.values())   # groups padded to multiples of 8 exist
    for e, (rows, gate, up, h, y) in kept.items():
        n = rows.shape[0]
        checks = [("experts.w1", "A", rows.t() @ rows / n), ("experts.w1", "S", N * gate.grad.t() @ gate.grad),
                  ("experts.w3", "S", N * up.grad.t() @ up.grad), ("experts.w2", "A", h.t() @ h / n),
                  ("experts.w2", "S", N * y.grad.t() @ y.grad)]
        for unit, which, ref in checks:
            got = getattr(units[unit], which)[e]
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
