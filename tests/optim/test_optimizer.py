"""KodaOptimizer: its two rules against torch's, latency scaling from a topology, noise, and
checkpoint state that carries K-FAC's factors."""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koda.errors import KodaError
from koda.optim import KFACPreconditioner, ParamGrads
from koda.optim.latency import latency_scales
from koda.optim.optimizer import KodaOptimizer, parameter_groups
from koda.topology import load_topology, naive_placement, place
from tests.helpers.kfac_settings import textbook
from tests.helpers.tiny import TINY


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 5))


def _loss(model, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 5, (8,), generator=g)
    return F.cross_entropy(model(x), y)


def _train(model, opt, steps, start=0):
    for s in range(start, start + steps):
        opt.zero_grad()
        _loss(model, s).backward()
        opt.step()


@pytest.mark.parametrize("rule", ["sgd", "sgd-nesterov", "adamw"])
def test_rules_match_torch(rule):
    ours, ref = _mlp(), _mlp()
    if rule.startswith("sgd"):
        nesterov = rule == "sgd-nesterov"
        opt = KodaOptimizer(ours.parameters(), lr=0.1, rule="sgd", momentum=0.9, nesterov=nesterov)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov)
    else:
        opt = KodaOptimizer(ours.parameters(), lr=0.01, rule="adamw", betas=(0.9, 0.95), weight_decay=0.1)
        ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    _train(ours, opt, 5)
    _train(ref, ref_opt, 5)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_latency_scale_multiplies_the_step_per_group():
    from koda.model import KodaForCausalLM

    model = KodaForCausalLM(TINY)
    groups = parameter_groups(model, dense_scale=1.0, expert_scale=0.25)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for n, p in model.named_parameters() if "experts" in n}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = KodaOptimizer(groups, lr=0.1, rule="sgd", momentum=0.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = 0.1 * (0.25 if ".experts." in n else 1.0)
        torch.testing.assert_close(before[n] - p.detach(), torch.full_like(p, expected))


TORUS = "launchers/topologies/torus-4x4x2x2.yaml"


def test_latency_scales_agree_on_replicas_and_depend_on_placement():
    topo = load_topology(TORUS)
    naive, placed = naive_placement(topo), place(topo, swap_budget=0)
    kappa = 0.01
    scales = [latency_scales(topo, naive, r, kappa) for r in range(topo.world_size)]
    assert len({s.dense for s in scales}) == 1                        # the DP group is every rank
    from koda.topology.cost import group_latency

    for r in range(topo.world_size):                                  # expert replicas: the EDP group
        for other in group_latency(topo, naive, r, 1.0).edp_ranks:
            assert scales[other].expert == scales[r].expert
    s = scales[0]
    assert s.dense == pytest.approx(1 / (1 + kappa * s.dense_latency_us))
    assert latency_scales(topo, naive, 0, 0.0).dense == 1.0
    other = [latency_scales(topo, placed, r, kappa) for r in range(topo.world_size)]
    assert naive.order != placed.order
    assert other[0].expert != pytest.approx(s.expert, rel=0.05)     # the EDP groups moved closer


def test_gradient_noise_is_reproducible_and_off_by_default():
    runs = []
    for eta in (0.0, 0.5, 0.5):
        model = _mlp()
        _train(model, KodaOptimizer(model.parameters(), lr=0.1, noise_eta=eta, seed=3), 3)
        runs.append([p.detach().clone() for p in model.parameters()])
    plain = _mlp()
    _train(plain, torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9), 3)
    assert all(torch.equal(a, b) for a, b in zip(runs[0], plain.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(runs[1], runs[2], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))


def _kfac_run(model):
    pre = KFACPreconditioner(model, textbook(inv_update_steps=2, kl_clip=1e-2), lr=0.1)
    return KodaOptimizer(model.parameters(), lr=0.1, preconditioner=pre, grads=ParamGrads(model))


def test_checkpoint_with_kfac_resumes_identically():
    straight = _mlp()
    _train(straight, _kfac_run(straight), 7)

    first = _mlp()
    opt = _kfac_run(first)
    _train(first, opt, 3)                                  # stop mid-interval (decomposed at step 2)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _mlp(seed=99)
    resumed.load_state_dict(saved["model"])
    opt2 = _kfac_run(resumed)
    opt2.load_state_dict(saved["optimizer"])
    assert opt2.preconditioner.steps == 3
    _train(resumed, opt2, 4, start=3)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoint_without_kfac_is_refused_by_a_kfac_run():
    model = _mlp()
    plain = KodaOptimizer(model.parameters(), lr=0.1)
    _train(model, plain, 1)
    with pytest.raises(KodaError, match="disagree on whether a gradient transform"):
        _kfac_run(_mlp()).load_state_dict(plain.state_dict())


def test_kfac_with_adamw_lr_steps_its_layers_by_sgd_and_the_rest_by_adamw():
    from koda.model import KodaForCausalLM

    model = KodaForCausalLM(TINY)
    cfg = textbook(adamw_lr=1e-3)
    groups = parameter_groups(model, kfac=cfg, adamw_lr_scale=1e-3 / 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    by_rule = {}
    for g in groups:
        by_rule.setdefault(g.get("rule", "default"), set()).update(names[id(p)] for p in g["params"])
    factored = {u.weight for u in KFACPreconditioner(model, cfg).units} | {"model.layers.0.mlp.gate.weight"}
    assert factored <= by_rule["default"] and "lm_head.weight" not in by_rule["default"]
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"} <= by_rule["adamw"]
    assert by_rule["default"].isdisjoint(by_rule["adamw"]) and len(names) == len(by_rule["default"] | by_rule["adamw"])
    assert all(g["lr_scale"] == pytest.approx(1e-2) for g in groups if g.get("rule") == "adamw")
    # without adamw_lr: one rule for all (the K-FAC step's SGD), as before
    assert all("rule" not in g for g in parameter_groups(model, kfac=textbook()))


def test_gradient_noise_follows_training_steps_when_stepped_one_group_at_a_time():
    """ZeRO-3 calls ``step`` once per parameter sub-group: the noise schedule must count
    training steps, not calls (a per-call counter decays the noise groups-times too fast)."""
    def run(split: bool):
        model = _mlp()
        params = list(model.parameters())
        opt = KodaOptimizer([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, noise_eta=0.5, seed=3)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            grads = [torch.randn(p.shape, generator=g) for p in params]
            parts = ([params[:2], params[2:]] if split else [params])
            for part in parts:
                for p, grad in zip(params, grads, strict=True):
                    p.grad = grad.clone() if any(p is q for q in part) else None
                opt.step()
        return [p.detach().clone() for p in params]

    for a, b in zip(run(split=False), run(split=True), strict=True):
        assert torch.equal(a, b)
