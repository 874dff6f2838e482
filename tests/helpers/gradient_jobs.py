"""Rank jobs for tests/distributed/test_gradients.py (run through tests.helpers.ranks)."""

from __future__ import annotations

import functools

# Which parameter each write path of GradientAccess scales, and by how much.
SCALED = {
    "model.layers.1.mlp.experts.w2": 2.0,                 # set(): a full [E, D, F] gradient
    "model.layers.0.mlp.experts.w1": 3.0,                 # set_experts(): this rank's experts
    "model.layers.0.self_attn.q_proj.weight": 0.5,        # set_local(): this rank's ZeRO-3 slice
}
MICRO, SEQ, LR = 2, 16, 1.0


def _engine(factory, config):
    """A ZeRO-3 engine with plain SGD and (in the configs here) no clipping, which DeepSpeed
    applies by default: an update is then exactly -LR x the gradient."""
    import torch

    from koda.distributed import comm, ds_config
    from koda.distributed.engine import build_engine
    from tests.helpers.tiny import TINY

    plan = ds_config.resolve(config, model=TINY, world_size=comm.world_size(), train_steps=10, bf16_supported=False)
    return build_engine("actor", factory, plan, optimizer=lambda params: torch.optim.SGD(params, lr=LR))


def _config(world: int, accum: int, **extra) -> dict:
    from koda.naming import AUTOEP_NAMING
    from tests.helpers.tiny import TINY

    return {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": accum,
            "train_batch_size": MICRO * accum * world, "zero_optimization": {"stage": 3},
            "zero_allow_untested_optimizer": True, "steps_per_print": 10**6, "gradient_clipping": 0.0,
            "expert_parallel": {"enabled": True, "autoep_size": world, **AUTOEP_NAMING, "top_k": TINY.top_k,
                                "use_grouped_mm": False},
            **extra}


def autoep_gradients(accum: int) -> dict:
    """One optimizer step of the tiny model on 2 ranks (AutoEP, ZeRO-3, fp32, `accum`
    micro-batches per rank) with a transform that reads every gradient through each view and
    scales the parameters in SCALED; compared with one process on the same global batch.

    Returns per parameter (engine names): the largest differences of the full, local-experts
    and ZeRO-partition views from the single-process gradient, and of the update from
    -LR x scale x that gradient; plus the errors that wrong-shape writes raised."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    from koda.distributed import comm
    from koda.errors import KodaError
    from koda.model import KodaForCausalLM
    from koda.naming import koda_to_autoep, moe_blocks
    from koda.objectives.language_model import next_token_loss
    from tests.helpers.tiny import TINY

    world, rank = comm.world_size(), comm.rank()
    torch.manual_seed(0)
    reference = KodaForCausalLM(TINY)
    torch.manual_seed(0)
    engine = _engine(functools.partial(KodaForCausalLM, TINY), _config(world, accum))
    tokens = torch.randint(0, TINY.vocab_size, (world, accum, MICRO, SEQ + 1),
                           generator=torch.Generator().manual_seed(1))

    # the single process: every rank's micro-batches in one batch, mean over all tokens
    # (what DeepSpeed's 1/accum scaling and its average over ranks add up to)
    batch = tokens.reshape(-1, SEQ + 1)
    next_token_loss(reference(batch[:, :-1]), batch[:, 1:]).backward()
    blocks = moe_blocks(n for n, _ in reference.named_parameters())
    ref_grad = koda_to_autoep({n: p.grad for n, p in reference.named_parameters()}, blocks)
    ref_param = koda_to_autoep({n: p.detach() for n, p in reference.named_parameters()}, blocks)

    out: dict = {"calls": 0, "grad": {}, "experts": {}, "local": {}, "update": {}, "errors": [], "rows": {}}

    def transform(grads):
        out["calls"] += 1
        full = {name: grads.get(name) for name in grads.names()}
        for name, g in full.items():
            out["grad"][name] = [float((g - ref_grad[name]).abs().max()), float(ref_grad[name].abs().max()),
                                 list(g.shape)]
            rows = list(grads.experts(name)) if grads.is_expert(name) else None
            if rows is not None:
                held = grads.get_experts(name)
                out["experts"][name] = float((held.values - ref_grad[name][rows]).abs().max())
                out["rows"][name] = list(held.experts)
            part = grads.get_local(name)
            whole = (g[rows] if rows is not None else g).flatten()
            out["local"][name] = [part.start, part.values.numel(), whole.numel(),
                                  float((part.values - whole[part.start:part.start + part.values.numel()]).abs().max())]
        a, b, c = SCALED
        for call in (lambda: grads.set(a, full[a][:1]), lambda: grads.set_experts(b, full[b]),
                     lambda: grads.set_local(c, grads.get_local(c).values[:-1])):
            try:
                call()
            except KodaError as err:
                out["errors"].append(str(err))
        grads.set(a, full[a] * SCALED[a])
        held = grads.get_experts(b)
        grads.set_experts(b, held.values * SCALED[b])
        part = grads.get_local(c)
        grads.set_local(c, part.values * SCALED[c])

    engine.add_gradient_transform(transform)
    engine.train()
    stepped = []
    for i in range(accum):
        micro = tokens[rank, i]
        engine.backward(next_token_loss(engine(micro[:, :-1]), micro[:, 1:]))
        stepped.append(engine.step())
    out["stepped"] = stepped

    access = engine._grads
    for name in access.names():
        after = safe_get_full_fp32_param(access.parameter(name))     # dense: full; experts: this rank's
        rows = list(access.experts(name)) if access.is_expert(name) else slice(None)
        expected = ref_param[name][rows] - LR * SCALED.get(name, 1.0) * ref_grad[name][rows]
        out["update"][name] = float((after - expected).abs().max())

    # DeepSpeed told to hold the boundary back: the transforms must not be skipped silently
    engine.ds.set_gradient_accumulation_boundary(False)
    try:
        for i in range(accum):
            micro = tokens[rank, i]
            engine.backward(next_token_loss(engine(micro[:, :-1]), micro[:, 1:]))
            engine.step()
        out["held_back"] = None
    except KodaError as err:
        out["held_back"] = [str(err), out["calls"]]
    return out


def unmanaged_accumulation() -> str | None:
    """With managed_gradient_accumulation false DeepSpeed has no boundary before step():
    registering a transform must fail (returns its error, None if it was accepted)."""
    import torch

    from koda.errors import KodaError

    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 2, "train_batch_size": 4,
              "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
              "managed_gradient_accumulation": False, "steps_per_print": 10**6}
    engine = _engine(functools.partial(torch.nn.Linear, 8, 8), config)
    try:
        engine.add_gradient_transform(lambda grads: None)
    except KodaError as err:
        return str(err)
    return None
