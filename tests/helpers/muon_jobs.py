"""Rank job for tests/optim/test_muon_zero3.py (run through tests.helpers.ranks), and the
one-process reference it is held against."""

from __future__ import annotations

import functools

SEQ, BATCH, STEPS = 16, 4, 3           # the global batch: the same 4 sequences whatever the world
CLIP = 0.5                             # acts on the tiny model's gradients (their norm is above it)
SECTION = {"name": "muon", "lr": 0.02, "weight_decay": 0.1, "betas": [0.9, 0.95],
           "muon": {"momentum": 0.95, "nesterov": True, "adamw_lr": 0.01}}


def batches():
    import torch

    from tests.helpers.tiny import TINY

    return torch.randint(0, TINY.vocab_size, (STEPS, BATCH, SEQ + 1), generator=torch.Generator().manual_seed(1))


def muon_under_zero3(out_dir: str) -> dict:
    """STEPS optimizer steps of the tiny model (ZeRO-3 + AutoEP, fp32) with KODA's optimizer as
    ``koda train`` builds it for ``optimizer.name: muon`` (ClientOptimizer: groups, plan,
    transform). Saves, per parameter, the weights this rank holds after the last step (all of a
    dense one; its experts, by global index); returns the raw gradient norms and group rules."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    from koda.distributed import comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM
    from koda.objectives.language_model import next_token_loss
    from koda.optim import OptimizerConfig
    from koda.pretrain.optimizer import ClientOptimizer, Scales
    from tests.helpers.gradient_jobs import _config
    from tests.helpers.tiny import TINY

    world, rank = comm.world_size(), comm.rank()
    config = _config(world, 1, gradient_clipping=CLIP)
    config["train_micro_batch_size_per_gpu"] = BATCH // world
    config["train_batch_size"] = BATCH
    client = ClientOptimizer(OptimizerConfig.from_dict(SECTION), seed=0, scales=Scales())
    plan = client.plan(ds_config.resolve(config, model=TINY, world_size=world, train_steps=10, bf16_supported=False))
    torch.manual_seed(0)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, TINY), plan, parameters=client.parameters,
                          optimizer=client)
    client.attach(engine)
    engine.train()
    norms = []
    for tokens in batches():
        micro = tokens[rank * (BATCH // world):(rank + 1) * (BATCH // world)]
        engine.backward(next_token_loss(engine(micro[:, :-1]), micro[:, 1:]))
        engine.step()
        norms.append(client.muon.last_grad_norm)
    access = engine.gradients()
    saved = {}
    for name in access.names():
        weights = safe_get_full_fp32_param(access.parameter(name)).clone()   # dense: full; experts: this rank's
        saved[name] = (list(access.experts(name)) if access.is_expert(name) else None, weights)
    torch.save(saved, f"{out_dir}/weights{rank}.pt")
    return {"norms": norms, "clip": plan.config["gradient_clipping"], "matrices": client.muon.matrices,
            "groups": [[g["rule"], g["lr_scale"]] for g in client.optimizer.param_groups]}


def reference() -> tuple[dict, list[float]]:
    """The same steps in one plain process, by AutoEP name: every expert of every w1/w3/w2 its
    own matrix, orthogonalised alone (a loop, not a batch), the rest AdamW as torch writes it.
    Returns (AutoEP name -> weights, the raw gradient norms)."""
    import math

    import torch

    from koda.model import KodaForCausalLM
    from koda.naming import assemble, autoep_to_koda_plan, koda_name, koda_to_autoep, moe_blocks
    from koda.objectives.language_model import next_token_loss
    from koda.optim import OptimizerConfig
    from koda.optim.muon import orthogonalise
    from tests.helpers.tiny import TINY

    cfg = OptimizerConfig.from_dict(SECTION)
    mu, lr, wd, (b1, b2) = cfg.muon.momentum, cfg.lr, cfg.weight_decay, cfg.betas
    torch.manual_seed(0)
    model = KodaForCausalLM(TINY)
    blocks = moe_blocks(n for n, _ in model.named_parameters())
    weights = {n: w.detach().clone() for n, w in koda_to_autoep(dict(model.named_parameters()), blocks).items()}
    state: dict = {}
    norms = []
    for t, tokens in enumerate(batches(), start=1):
        model.zero_grad()
        next_token_loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()
        grads = koda_to_autoep({n: p.grad for n, p in model.named_parameters()}, blocks)
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
        norms.append(norm)
        coef = min(1.0, 1.0 / ((norm + 1e-6) / CLIP))
        for name, w in weights.items():
            g = grads[name] * coef
            if cfg.muon.selects(koda_name(name), w.dim()):
                buf = state.setdefault(name, torch.zeros_like(g))
                buf.mul_(mu).add_(g, alpha=1 - mu)
                u = (1 - mu) * g + mu * buf
                mats = [u] if u.dim() == 2 else list(u)                   # one expert at a time
                o = [orthogonalise(m) * 0.2 * math.sqrt(max(m.shape)) for m in mats]
                w.mul_(1 - lr * wd).sub_(lr * (o[0] if u.dim() == 2 else torch.stack(o)))
            else:
                alr = cfg.muon.adamw_lr
                m, v = state.setdefault(name, (torch.zeros_like(g), torch.zeros_like(g)))
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                w.mul_(1 - alr * wd)
                w.sub_(alr / (1 - b1 ** t) * m / ((v / (1 - b2 ** t)).sqrt() + 1e-8))
        plan = autoep_to_koda_plan({n: tuple(w.shape) for n, w in weights.items()}, blocks)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(assemble(plan[name][1], weights.__getitem__))
    return weights, norms
