"""The K-FAC schedule, damping, KL clipping, gradient accumulation and state, on a small MLP
(whose factors tests/optim/test_kfac_reference.py checks against curvlinops)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koda.errors import ConfigError, KodaError
from koda.optim import KFACPreconditioner, OptimizerConfig, ParamGrads
from tests.helpers.kfac_settings import textbook


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 5))


def _batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, generator=g), torch.randint(0, 5, (n, 3), generator=g)


def _backward(model, x, y, scale=1.0):
    out = model(x)
    (scale * F.cross_entropy(out.reshape(-1, 5), y.reshape(-1))).backward()


def _step(model, pre, seed):
    model.zero_grad()
    _backward(model, *_batch(seed))
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    pre.step(ParamGrads(model))
    return raw


def _batch_factors(seed):
    """A, S of every unit from one batch alone (a fresh preconditioner's first update)."""
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(kl_clip=None))
    _step(model, pre, seed)
    return [(u.A.clone(), u.S.clone()) for u in pre.units]


def test_running_average_and_intervals():
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(factor_update_steps=2, inv_update_steps=4, factor_decay=0.8,
                                               kl_clip=None))
    b0, b2 = _batch_factors(0), _batch_factors(2)
    _step(model, pre, 0)                                  # step 0: factors from batch 0, decomposed
    first = [(u.A.clone(), u.decomposition["inv_a"].clone()) for u in pre.units]
    model.zero_grad()
    _backward(model, *_batch(1))                          # step 1 is no factor step: hooks record nothing
    assert all(u.a_sum is None and u.s_sum is None for u in pre.units)
    pre.step(ParamGrads(model))
    for u, (A, _) in zip(pre.units, first, strict=True):
        assert torch.equal(u.A, A)
    _step(model, pre, 2)                                  # step 2: averaged in, not decomposed
    for u, (A0, S0), (A2, S2), (_, q) in zip(pre.units, b0, b2, first, strict=True):
        torch.testing.assert_close(u.A, 0.8 * A0 + 0.2 * A2)
        torch.testing.assert_close(u.S, 0.8 * S0 + 0.2 * S2)
        assert torch.equal(u.decomposition["inv_a"], q)
    _step(model, pre, 3)
    _step(model, pre, 4)                                  # step 4: decomposed again
    for u, (_, q) in zip(pre.units, first, strict=True):
        assert not torch.allclose(u.decomposition["inv_a"], q)


def test_gradient_accumulation_gives_the_full_batch_factors():
    x, y = _batch(0)
    full = _batch_factors(0)
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(kl_clip=None))
    for part in (slice(0, 3), slice(3, 8)):               # uneven micro-batches, loss scaled by share
        _backward(model, x[part], y[part], scale=(part.stop - part.start) / 8)
    pre.step(ParamGrads(model))
    for u, (A, S) in zip(pre.units, full, strict=True):
        torch.testing.assert_close(u.A, A)
        torch.testing.assert_close(u.S, S)


def test_damping_split_and_limit():
    model = _mlp()
    lam = 1e12
    pre = KFACPreconditioner(model, textbook(damping=lam, kl_clip=None))
    raw = _step(model, pre, 0)
    for u in pre.units:
        gamma_a, gamma_s = pre.damping(u)
        pi2 = (u.A[0].trace() / u.a_dim) / (u.S[0].trace() / u.s_dim)
        torch.testing.assert_close(gamma_a / gamma_s, pi2[None])
        torch.testing.assert_close(gamma_a * gamma_s, torch.tensor([lam]))
    # λ far above the factors' eigenvalues: the update tends to G / λ
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad * lam, raw[n], rtol=1e-3, atol=1e-6)


def test_kl_clip_bounds_the_update():
    """ν scales the natural-gradient step so that its quadratic form lr² ν² pᵀF p = lr² ν² pᵀg
    equals kl_clip when it would exceed it (kfac-pytorch's rule)."""
    lr, clip = 0.5, 1e-6
    free = _mlp()
    raw = _step(free, KFACPreconditioner(free, textbook(kl_clip=None)), 0)
    p_free = {n: p.grad.clone() for n, p in free.named_parameters()}
    pg = sum(float((p_free[n] * raw[n]).sum()) for n in raw)
    nu = math.sqrt(clip / (lr ** 2 * pg))
    assert nu < 1
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(kl_clip=clip), lr=lr)
    _step(model, pre, 0)
    assert math.isclose(pre.last_kl_scale, nu, rel_tol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, nu * p_free[n])
    loose = _mlp()
    pre = KFACPreconditioner(loose, textbook(kl_clip=1e9), lr=lr)
    _step(loose, pre, 0)
    assert pre.last_kl_scale == 1.0
    for n, p in loose.named_parameters():
        assert torch.equal(p.grad, p_free[n])


def test_kl_clip_at_learning_rate_zero_leaves_the_gradient_unscaled():
    """A warm-up schedule starting at lr 0 (DeepSpeed's WarmupCosineLR, warmup_min_ratio 0)
    makes the clip's quadratic form 0: nothing to clip, not a division by zero."""
    free = _mlp()
    _step(free, KFACPreconditioner(free, textbook(kl_clip=None)), 0)
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(kl_clip=1e-6), lr=lambda: 0.0)
    _step(model, pre, 0)
    assert pre.last_kl_scale == 1.0
    for (n, p), q in zip(model.named_parameters(), free.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n


def test_state_round_trip_continues_identically():
    cfg = textbook(factor_update_steps=1, inv_update_steps=3, kl_clip=None)
    model = _mlp()
    pre = KFACPreconditioner(model, cfg)
    for seed in range(2):
        _step(model, pre, seed)
    state = pre.state_dict()
    restored_model = _mlp()
    restored = KFACPreconditioner(restored_model, cfg)
    restored.load_state_dict(state)
    _step(model, pre, 5)                                  # step 2: averages factors, keeps decomposition
    _step(restored_model, restored, 5)
    for (n, p), q in zip(model.named_parameters(), restored_model.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n
    for a, b in zip(pre.units, restored.units, strict=True):
        assert torch.equal(a.A, b.A) and torch.equal(a.S, b.S)


def test_state_of_another_model_is_refused():
    pre = KFACPreconditioner(_mlp(), textbook())
    other = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5))
    state = KFACPreconditioner(other, textbook())
    _step(other, state, 0)
    with pytest.raises(KodaError, match="A has shape"):
        pre.load_state_dict(state.state_dict())


def test_selection_by_pattern():
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(skip=("0",)))
    assert [u.name for u in pre.units] == ["2"]
    with pytest.raises(KodaError, match="no layer selected"):
        KFACPreconditioner(model, textbook(include=("nothing",)))


@pytest.mark.parametrize("section, message", [
    ({"name": "sgd"}, "optimizer.name must be 'adamw', 'kfac' or 'muon'"),
    ({"kappa": -1}, "optimizer.kappa must be >= 0"),
    ({"nesterov": "yes"}, "optimizer.nesterov must be true or false"),
    ({"kfac": {"damping": 0}}, "optimizer.kfac.damping must be > 0"),
    ({"kfac": {"inv_update_steps": 3, "factor_update_steps": 2}}, "is not a multiple of"),
    ({"kfac": {"skip": ["("]}}, "bad regex"),
    ({"kfac": {"inverse": "qr"}}, "inverse must be"),
    ({"kfac": {"dampening": 1}}, "unknown key 'dampening'"),
    ({"learning_rate": 1}, "optimizer: unknown key 'learning_rate'"),
    ({"kappa": 0.1}, "optimizer.kappa > 0 needs optimizer.topology"),
    ({"lr": 0}, "optimizer.lr must be > 0"),
    ({"kfac": {"kl_clip": 1e-3}}, "set update_rms: null to use kl_clip"),
    ({"kfac": {"update_rms": 0, "kl_clip": None}}, "update_rms must be > 0 or null"),
])
def test_config_errors_are_one_line(section, message):
    with pytest.raises(ConfigError, match=message) as err:
        OptimizerConfig.from_dict(section)
    assert "\n" not in str(err.value)


def test_config_from_dict():
    cfg = OptimizerConfig.from_dict({"name": "kfac", "kappa": 0.1, "topology": "t.yaml",
                                     "kfac": {"skip": ["lm_head", r"mlp\.gate$"]}})
    assert cfg.kfac.skip == ("lm_head", r"mlp\.gate$") and cfg.kfac.selects("model.layers.0.self_attn.q_proj")
    assert not cfg.kfac.selects("model.layers.0.mlp.gate")
    cfg = OptimizerConfig.from_dict({"name": "kfac", "kfac": {"update_rms": 0.2, "kl_clip": None}})
    assert cfg.kfac.update_rms == 0.2 and cfg.kfac.kl_clip is None


def test_bf16_autocast_keeps_fp32_factors_and_eval_records_nothing():
    x, y = _batch(0)
    full = _batch_factors(0)
    model = _mlp()
    pre = KFACPreconditioner(model, textbook(kl_clip=None))
    with torch.no_grad():
        model(x)                                           # evaluation: no statistics
    assert all(u.a_sum is None for u in pre.units)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    F.cross_entropy(out.float().reshape(-1, 5), y.reshape(-1)).backward()
    pre.step(ParamGrads(model))
    for u, (A, S) in zip(pre.units, full, strict=True):
        assert u.A.dtype == torch.float32 and u.S.dtype == torch.float32
        torch.testing.assert_close(u.A, A, rtol=0.05, atol=0.02 * A.abs().max().item())
        torch.testing.assert_close(u.S, S, rtol=0.05, atol=0.05 * S.abs().max().item())


def _preconditioned(cfg, seed=0):
    model = _mlp()
    pre = KFACPreconditioner(model, cfg)
    _step(model, pre, seed)
    return pre, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_auto_dtype_applies_fp32_where_the_conditioning_allows_and_stays_near_fp64():
    exact, want = _preconditioned(textbook(kl_clip=None, inverse_dtype="float64"))
    auto, got = _preconditioned(textbook(kl_clip=None, inverse_dtype="auto"))
    assert all(u.decomposition["inv_a"].dtype == torch.float32 for u in auto.units)   # cond ~ 10-100 here
    for name, ref in want.items():
        torch.testing.assert_close(got[name], ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())
    # almost no damping: the damped condition number is huge and auto keeps those units in fp64
    tight, _ = _preconditioned(textbook(kl_clip=None, inverse_dtype="auto", damping=1e-16, min_damping=0.0))
    assert any(u.decomposition["inv_a"].dtype == torch.float64 for u in tight.units)
    assert all((u.decomposition["inv_a"].dtype == torch.float64) == (float(u.decomposition["cond"]) * 2**-24 > 1e-3)
               for u in tight.units)


def test_state_written_with_eigenbases_loads_as_the_same_inverses():
    cfg = textbook(kl_clip=None)
    pre, _ = _preconditioned(cfg)
    state = pre.state_dict()
    for u, values in zip(pre.units, state["units"].values(), strict=True):     # the older layout: Q, d
        for side, factor in (("a", u.A), ("s", u.S)):
            d, q = torch.linalg.eigh(factor.double())
            values[f"d_{side}"], values[f"q_{side}"] = d.clamp(min=0), q
            del values[f"inv_{side}"]
        del values["cond"]
    restored = KFACPreconditioner(_mlp(), cfg)
    restored.load_state_dict(state)
    for a, b in zip(pre.units, restored.units, strict=True):
        for key in ("inv_a", "inv_s", "cond"):
            torch.testing.assert_close(b.decomposition[key], a.decomposition[key], rtol=1e-9, atol=1e-9)


def test_state_with_a_fused_gate_up_unit_loads_as_its_two_diagonal_blocks():
    from koda.model.moe import MoEBlock
    from tests.helpers.tiny import TINY

    torch.manual_seed(0)
    block = MoEBlock(TINY)
    for p in block.parameters():                          # the block alone is not initialised
        nn.init.normal_(p, std=0.2)
    pre = KFACPreconditioner(block, textbook(kl_clip=None, skip=("gate$",)))
    block(torch.randn(2, 6, TINY.d_model)).square().mean().backward()
    pre.step(ParamGrads(block))
    state = pre.state_dict()
    gate, up = (state["units"].pop(f"experts.gate_up_proj.{p}") for p in ("gate", "up"))
    fused = torch.randn(*gate["S"].shape[:1], 2 * TINY.ffn_hidden, 2 * TINY.ffn_hidden)
    fused[:, :TINY.ffn_hidden, :TINY.ffn_hidden] = gate["S"]
    fused[:, TINY.ffn_hidden:, TINY.ffn_hidden:] = up["S"]
    state["units"]["experts.gate_up_proj"] = {"A": gate["A"], "S": fused, "seen": gate["seen"]}
    restored = KFACPreconditioner(MoEBlock(TINY), textbook(kl_clip=None, skip=("gate$",)))
    restored.load_state_dict(state)
    for a, b in zip(pre.units, restored.units, strict=True):
        assert torch.equal(a.S, b.S) and torch.equal(a.A, b.A), a.name
        torch.testing.assert_close(b.decomposition["inv_s"], a.decomposition["inv_s"])


def test_update_rms_keeps_the_kfac_direction_at_that_rms_per_layer():
    """Each unit's [weight | bias] update is the plain K-FAC direction rescaled to RMS
    update_rms; layers whose K-FAC steps differ by orders of magnitude come out level."""
    _, free = _preconditioned(textbook(kl_clip=None))
    pre, got = _preconditioned(textbook(kl_clip=None, update_rms=0.2))
    sizes = []
    for layer in ("0", "2"):
        want = torch.cat([free[f"{layer}.weight"], free[f"{layer}.bias"][:, None]], 1)
        have = torch.cat([got[f"{layer}.weight"], got[f"{layer}.bias"][:, None]], 1)
        assert math.isclose(float(have.square().mean().sqrt()), 0.2, rel_tol=1e-5)
        torch.testing.assert_close(have, want * (0.2 / want.square().mean().sqrt()))
        sizes.append(float(want.square().mean().sqrt()))
    assert max(sizes) / min(sizes) > 1.3         # the plain steps differ, so the rescaling did something
    assert pre.last_kl_scale == 1.0


def test_update_rms_rescales_each_expert_alone():
    from koda.model.moe import MoEBlock
    from tests.helpers.tiny import TINY

    torch.manual_seed(0)
    block = MoEBlock(TINY)
    for p in block.parameters():                  # the block alone is not initialised (the model does it)
        nn.init.normal_(p, std=0.2)
    x, target = torch.randn(3, 10, TINY.d_model), torch.randn(3, 10, TINY.d_model)
    pre = KFACPreconditioner(block, textbook(kl_clip=None, update_rms=0.2, skip=("gate",)))
    F.mse_loss(block(x), target).backward()
    pre.step(ParamGrads(block))
    F_ = TINY.ffn_hidden
    down, gate_up = block.experts.down_proj.grad, block.experts.gate_up_proj.grad     # [E, D, F], [E, 2F, D]
    seen = pre.units[0].seen
    assert seen.sum() >= 2
    for e in range(TINY.n_experts):
        for part in (down[e], gate_up[e, :F_], gate_up[e, F_:]):
            rms = float(part.square().mean().sqrt())
            assert math.isclose(rms, 0.2, rel_tol=1e-5) if seen[e] else rms == 0.0


def test_clip_scales_the_raw_gradients_before_preconditioning():
    """With clip (a run with update_rms) the raw gradients are clipped by DeepSpeed's rule first:
    what K-FAC leaves alone comes out clipped, and the measured norm is the raw one."""
    model = _mlp()
    model.zero_grad()
    _backward(model, *_batch(0))
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    norm = torch.cat([g.flatten() for g in raw.values()]).norm().item()
    pre = KFACPreconditioner(model, textbook(kl_clip=None, update_rms=0.2, skip=("^2$",)), clip=norm / 4)
    model.zero_grad()
    _backward(model, *_batch(0))
    pre.step(ParamGrads(model))
    assert pre.clipping.last_norm == pytest.approx(norm, rel=1e-6)
    coef = 1 / ((norm + 1e-6) / (norm / 4))
    params = dict(model.named_parameters())
    for name in ("2.weight", "2.bias"):                          # not factored: the clipped raw gradient
        torch.testing.assert_close(params[name].grad, raw[name] * coef)
    unit = torch.cat([params["0.weight"].grad, params["0.bias"].grad[:, None]], 1)
    assert float(unit.square().mean().sqrt()) == pytest.approx(0.2, rel=1e-5)
