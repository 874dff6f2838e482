"""Muon in one process: the orthogonalisation, the rule against torch.optim.Muon + AdamW, which
tensors it takes, clipping, checkpoint state, config errors."""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koda.errors import ConfigError
from koda.model import KodaForCausalLM
from koda.naming import koda_name, koda_to_autoep, moe_blocks
from koda.optim import MuonConfig, OptimizerConfig, ParamGrads
from koda.optim.muon import Muon, orthogonalise
from koda.optim.optimizer import KodaOptimizer, parameter_groups
from tests.helpers.tiny import TINY


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (4, 64)])
def test_orthogonalise_puts_every_singular_value_near_one(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1e3
    s = torch.linalg.svdvals(orthogonalise(g))
    assert s.min() > 0.6 and s.max() < 1.25, s              # the quintic's band, not exactly 1


def test_expert_stack_is_orthogonalised_matrix_by_matrix():
    """[E, A, B] is E matrices: each as if alone, not the [E*A, B] stack nor with a shared norm."""
    g = torch.randn(4, 48, 32, generator=torch.Generator().manual_seed(1))
    g[0] *= 100.0                                           # one expert's gradient far larger
    out = orthogonalise(g)
    for e in range(4):
        torch.testing.assert_close(out[e], orthogonalise(g[e]), rtol=0, atol=1e-6)
        s = torch.linalg.svdvals(out[e])
        assert s.min() > 0.6 and s.max() < 1.25, (e, s)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 8))


def _loss(model, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 16, generator=g), torch.randint(0, 8, (32,), generator=g)
    return F.cross_entropy(model(x), y)


def _koda(model, cfg, lr=0.02, adamw_lr=0.01, weight_decay=0.1, clip=0.0):
    cfg = MuonConfig(**cfg)
    return KodaOptimizer(parameter_groups(model, muon=cfg, adamw_lr_scale=adamw_lr / lr), lr=lr, rule="adamw",
                         betas=(0.9, 0.95), weight_decay=weight_decay, preconditioner=Muon(model, cfg, clip=clip),
                         grads=ParamGrads(model))


def _train(model, opts, steps, start=0):
    for s in range(start, start + steps):
        for opt in opts:
            opt.zero_grad()
        _loss(model, s).backward()
        for opt in opts:
            opt.step()


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_torch_muon_with_adamw_on_the_rest(adjust, nesterov):
    """bf16 Newton-Schulz, as torch's: the weights (Muon) and biases (AdamW) of a plain MLP
    follow torch.optim.Muon + torch.optim.AdamW over 5 steps."""
    ours, ref = _model(), _model()
    _train(ours, [_koda(ours, {"ns_dtype": "bfloat16", "adjust_lr": adjust, "nesterov": nesterov})], 5)
    weights = [p for p in ref.parameters() if p.dim() == 2]
    biases = [p for p in ref.parameters() if p.dim() == 1]
    _train(ref, [torch.optim.Muon(weights, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=nesterov,
                                  adjust_lr_fn=adjust),
                 torch.optim.AdamW(biases, lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)], 5)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_clipping_scales_the_raw_gradients_by_deepspeeds_rule():
    model = _model()
    _loss(model, 0).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    norm = torch.cat([g.flatten() for g in raw.values()]).norm().item()
    muon = Muon(model, MuonConfig(momentum=0.0, nesterov=False), clip=norm / 4)
    muon(ParamGrads(model))
    assert muon.last_grad_norm == pytest.approx(norm, rel=1e-6)
    coef = 1 / ((norm + 1e-6) / (norm / 4))
    for name in muon.others:                                   # AdamW's biases: clipped raw gradients
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, raw[name] * coef)
    assert muon.matrices == ["0.weight", "2.weight"]


def test_checkpoint_resumes_the_momentum_exactly():
    cfg = {"nesterov": True}
    straight = _model()
    _train(straight, [_koda(straight, cfg)], 7)
    first = _model()
    opt = _koda(first, cfg)
    _train(first, [opt], 3)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _model(seed=99)
    resumed.load_state_dict(saved["model"])
    opt2 = _koda(resumed, cfg)
    opt2.load_state_dict(saved["optimizer"])
    assert opt2.preconditioner.steps == 3 and set(opt2.preconditioner.momentum) == {"0.weight", "2.weight"}
    _train(resumed, [opt2], 4, start=3)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_hidden_matrices_only_and_the_same_choice_under_autoep_names():
    """Embeddings, lm_head and norms to AdamW; attention, router and experts to Muon, by KODA
    name in the optimizer's groups and by AutoEP name in the engine's transform alike."""
    model = KodaForCausalLM(TINY)
    cfg = MuonConfig()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, muon=cfg, adamw_lr_scale=0.5)
    muon_names = {names[id(p)] for g in groups if g["rule"] == "update" for p in g["params"]}
    assert all(g["lr_scale"] == 0.5 for g in groups if g["rule"] == "adamw")
    expected = {n for n, p in model.named_parameters()
                if p.dim() >= 2 and "embed_tokens" not in n and "lm_head" not in n}
    assert muon_names == expected and any(n.endswith("mlp.gate.weight") for n in muon_names)
    assert any(n.endswith("experts.gate_up_proj") for n in muon_names)
    autoep = koda_to_autoep(dict(model.named_parameters()), moe_blocks(names.values()))
    chosen = {n for n, p in autoep.items() if cfg.selects(koda_name(n), p.dim())}
    assert {koda_name(n) for n in chosen} == muon_names
    assert {n.rsplit(".", 1)[-1] for n in chosen if ".experts." in n} == {"w1", "w2", "w3"}
    assert any(n.endswith("router.gate.weight") for n in chosen)


@pytest.mark.parametrize("section, message", [
    ({"muon": {"momentum": 1.0}}, r"optimizer.muon.momentum must be in \[0, 1\)"),
    ({"muon": {"ns_steps": 0}}, "optimizer.muon.ns_steps must be an integer"),
    ({"muon": {"nesterov": "yes"}}, "optimizer.muon.nesterov must be true or false"),
    ({"muon": {"adjust_lr": "keller"}}, "optimizer.muon.adjust_lr must be"),
    ({"muon": {"adamw_lr": 0}}, "optimizer.muon.adamw_lr must be > 0"),
    ({"muon": {"ns_dtype": "float16"}}, "optimizer.muon.ns_dtype must be"),
    ({"muon": {"skip": ["("]}}, "optimizer.muon.skip: bad regex"),
    ({"muon": {"beta": 0.9}}, "optimizer.muon: unknown key 'beta'"),
    ({"muon": [1]}, "optimizer.muon must be a mapping"),
    ({"name": "muon", "noise_eta": 0.1}, "noise_eta > 0 is not supported with optimizer.name muon"),
])
def test_config_errors_are_one_line(section, message):
    with pytest.raises(ConfigError, match=message) as err:
        OptimizerConfig.from_dict(section)
    assert "\n" not in str(err.value)


def test_config_from_dict():
    cfg = OptimizerConfig.from_dict({"name": "muon", "lr": 0.02,
                                     "muon": {"momentum": 0.9, "adamw_lr": 3e-4, "skip": ["lm_head"]}})
    assert cfg.muon == MuonConfig(momentum=0.9, adamw_lr=3e-4, skip=("lm_head",))
