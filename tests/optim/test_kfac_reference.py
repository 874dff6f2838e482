"""K-FAC factors and preconditioned gradients against independent references: curvlinops'
KFAC operator (empirical Fisher, KFAC-expand) for Linear layers (skipped where curvlinops is
not installed; tests/optim/test_kfac_layers.py checks a Linear by hand without it), and a
per-expert dense reference built here from the routed tokens for the MoE experts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koda.model import KodaForCausalLM
from koda.model.moe import MoEBlock, route
from koda.optim import KFACPreconditioner, ParamGrads
from tests.helpers.kfac_settings import textbook
from tests.helpers.tiny import TINY

DAMPING = 1e-3


@pytest.fixture
def curvlinops():
    """Only the tests that compare against curvlinops need it; the Makefile installs it with
    --no-deps (pyproject's dev extra says why), so a plain ``pip install -e '.[dev]'`` lacks it."""
    return pytest.importorskip("curvlinops")


class ChannelsSecond(nn.Module):
    """[B, T, C] logits -> [B, C, T], the layout curvlinops' CrossEntropyLoss expects."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).transpose(1, 2)


def _curvlinops(curvlinops, model, linears, x, y):
    """curvlinops' KFAC (expand, empirical Fisher, bias jointly) and its π-damped inverse."""
    params = [p for m in linears for p in m.parameters()]
    kfac = curvlinops.KFACLinearOperator(
        ChannelsSecond(model), nn.CrossEntropyLoss(), params, [(x, y)], fisher_type="empirical",
        kfac_approx="expand", separate_weight_and_bias=False, check_deterministic=False)
    kfac.compute_kronecker_factors()
    inverse = curvlinops.KFACInverseLinearOperator(kfac, damping=DAMPING, use_heuristic_damping=True,
                                                   min_damping=1e-8)
    return kfac, inverse, params


def _kfac_step(model, x, y, inverse_method, skip=()):
    pre = KFACPreconditioner(model, textbook(damping=DAMPING, kl_clip=None, inverse=inverse_method,
                                               skip=skip, inv_update_steps=1))
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    pre.step(ParamGrads(model))
    return pre, raw


def _compare(curvlinops, model, linears, x, y, inverse_method, flat=()):
    """`flat`: Linear layers fed the flattened tokens [B*T, D] (the router). curvlinops takes
    their leading axis for the batch of N_data = B sequences, so its A is T times and its S
    T² times the per-token expectation; their factors are compared after removing exactly
    that, and their preconditioned gradient against the damped formula on those factors."""
    kfac, inverse, params = _curvlinops(curvlinops, model, linears, x, y)
    T = x.shape[1]
    names = {m: n for n, m in model.named_modules()}
    pre, raw = _kfac_step(model, x, y, inverse_method)
    units = {u.name: u for u in pre.units}
    for m in linears:
        u = units[names[m]]
        A = kfac._input_covariances[f"net.{names[m]}"] / (T if m in flat else 1)
        S = kfac._gradient_covariances[f"net.{names[m]}"] / (T * T if m in flat else 1)
        torch.testing.assert_close(u.A[0], A, rtol=1e-5, atol=1e-5 * A.abs().max().item())
        torch.testing.assert_close(u.S[0], S, rtol=1e-5, atol=1e-5 * S.abs().max().item())
    by_param = {p: n for n, p in model.named_parameters()}
    expected = inverse @ [raw[by_param[p]] for p in params]
    for p, e in zip(params, expected, strict=True):
        if not any(p is q for m in flat for q in m.parameters()):
            assert not torch.allclose(p.grad, raw[by_param[p]], rtol=1e-2)     # it did change
            torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5 * e.abs().max().item())
    for m in flat:
        u = units[names[m]]
        want = _damped_solve(u.A[0], u.S[0], raw[by_param[m.weight]])
        torch.testing.assert_close(m.weight.grad.double(), want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    return pre


def _damped_solve(A, S, G, damping=DAMPING):
    """(S + γ_S I)⁻¹ G (A + γ_A I)⁻¹ in float64 with the π split of `damping`."""
    A, S, G = A.double(), S.double(), G.double()
    pi = ((A.trace() / A.shape[0]) / (S.trace() / S.shape[0])).sqrt()
    lam = damping ** 0.5
    A_d = A + pi * lam * torch.eye(A.shape[0], dtype=A.dtype)
    S_d = S + lam / pi * torch.eye(S.shape[0], dtype=S.dtype)
    return torch.linalg.solve(S_d, G) @ torch.linalg.inv(A_d)


@pytest.mark.parametrize("inverse_method", ["eigen", "cholesky"])
def test_mlp_with_biases_matches_curvlinops(curvlinops, inverse_method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 5))
    x = torch.randn(4, 7, 6)                        # [B, T, D]: the sequence axis is expanded
    y = torch.randint(0, 5, (4, 7))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    _compare(curvlinops, model, linears, x, y, inverse_method)


def test_smoke_model_linears_match_curvlinops(curvlinops):
    torch.manual_seed(0)
    cfg = TINY.replace(moe_every=2)                 # layer 0 dense SwiGLU, layer 1 MoE
    model = KodaForCausalLM(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    y = torch.randint(0, cfg.vocab_size, (2, 16))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    routers = [m for n, m in model.named_modules() if n.endswith("mlp.gate")]
    pre = _compare(curvlinops, model, linears, x, y, "eigen", flat=routers)
    kinds = {u.name.rsplit(".", 1)[-1] for u in pre.units}
    assert {"q_proj", "o_proj", "gate", "gate_proj", "down_proj", "lm_head", "up"} <= kinds


def _reference_block(block: MoEBlock, x: torch.Tensor, target: torch.Tensor):
    """The block's forward written per expert with autograd on every expert matmul; returns
    {expert: (rows, z = rows W_guᵀ, h = hidden, y = rows' expert output)} after backward."""
    flat = x.reshape(-1, x.shape[-1])
    weights, experts = route(block.gate(flat), block.top_k)
    out = torch.zeros_like(flat)
    kept = {}
    for e in range(block.experts.n_experts):
        token, slot = (experts == e).nonzero(as_tuple=True)
        if not len(token):
            continue
        rows = flat[token]
        z = rows @ block.experts.gate_up_proj[e].t()
        gate, up = z.chunk(2, dim=-1)
        h = F.silu(gate) * up
        y = h @ block.experts.down_proj[e].t()
        z.retain_grad()
        y.retain_grad()
        out = out.index_add(0, token, weights[token, slot][:, None] * y)
        kept[e] = (rows.detach(), z, h.detach(), y)
    F.mse_loss(out, target.reshape_as(out)).backward()
    return kept, flat.shape[0]


def test_expert_factors_match_a_per_expert_dense_reference():
    torch.manual_seed(0)
    block = MoEBlock(TINY)
    for p in block.parameters():
        nn.init.normal_(p, std=0.2)
    x = torch.randn(3, 10, TINY.d_model)
    target = torch.randn(3, 10, TINY.d_model)
    kept, n_tokens = _reference_block(block, x, target)
    ref_grads = {n: p.grad.clone() for n, p in block.named_parameters()}
    block.zero_grad()

    pre = KFACPreconditioner(block, textbook(damping=DAMPING, kl_clip=None, skip=("gate",)))
    F.mse_loss(block(x), target).backward()
    torch.testing.assert_close(block.experts.gate_up_proj.grad, ref_grads["experts.gate_up_proj"])
    raw = {n: p.grad.clone() for n, p in block.named_parameters()}
    pre.step(ParamGrads(block))
    units = {u.name: u for u in pre.units}
    gate, up, down = (units[f"experts.{n}"] for n in ("gate_up_proj.gate", "gate_up_proj.up", "down_proj"))
    F_ = TINY.ffn_hidden
    assert len(kept) >= 2
    for e, (rows, z, h, y) in kept.items():
        n = rows.shape[0]
        dz_gate, dz_up = z.grad[:, :F_], z.grad[:, F_:]
        refs = [(gate, "A", rows.t() @ rows / n), (gate, "S", n_tokens * dz_gate.t() @ dz_gate),
                (up, "A", rows.t() @ rows / n), (up, "S", n_tokens * dz_up.t() @ dz_up),
                (down, "A", h.t() @ h / n), (down, "S", n_tokens * y.grad.t() @ y.grad)]
        for unit, which, ref in refs:
            got = getattr(unit, which)[e]
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
        params = dict(block.named_parameters())
        for unit, param, rows_of in ((gate, "experts.gate_up_proj", slice(0, F_)),
                                     (up, "experts.gate_up_proj", slice(F_, 2 * F_)),
                                     (down, "experts.down_proj", slice(None))):
            want = _damped_solve(unit.A[e], unit.S[e], raw[param][e][rows_of])
            got = params[param].grad[e][rows_of].double()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    for e in set(range(TINY.n_experts)) - set(kept):
        assert not pre.units[0].seen[e]
