"""Rank jobs for tests/train/test_isometry_two_rank.py (run through tests.helpers.ranks)."""

from __future__ import annotations

import functools

PATTERNS = ["q_proj", "o_proj", r"experts\.w1"]
MICRO, SEQ, LR, STEPS = 2, 16, 0.05, 4


def _engine():
    """The tiny model under ZeRO-3 + AutoEP (ep = world), fp32, plain SGD, no clipping: an update
    is then exactly -LR x the gradient."""
    import torch

    from koda.distributed import comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM
    from koda.naming import AUTOEP_NAMING
    from tests.helpers.tiny import TINY

    world = comm.world_size()
    config = {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": 1,
              "train_batch_size": MICRO * world, "zero_optimization": {"stage": 3},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**6, "gradient_clipping": 0.0,
              "expert_parallel": {"enabled": True, "autoep_size": world, **AUTOEP_NAMING, "top_k": TINY.top_k,
                                  "use_grouped_mm": False}}
    plan = ds_config.resolve(config, model=TINY, world_size=world, train_steps=10, bf16_supported=False)
    torch.manual_seed(0)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, TINY), plan,
                          optimizer=lambda params: torch.optim.SGD(params, lr=LR))
    return engine, plan


def _mean_over_ranks(value) -> float:
    import torch

    from koda.distributed import comm

    return float(comm.all_reduce_sum(torch.tensor([float(value)]))[0]) / comm.world_size()


def ortho_under_zero3(lam: float) -> dict:
    """Returns: the penalty of the first forward (mean over ranks of each rank's term) and the
    one-process penalty of the same full weights; the largest difference of every selected
    weight, after one step on `lam` x penalty alone, from W - LR·lam·dP/dW computed in one
    process; the penalty of each forward over STEPS steps of CE + lam x penalty, and of CE alone."""
    import torch

    from koda.distributed import comm
    from koda.distributed.gather import full_weights
    from koda.model import KodaForCausalLM
    from koda.naming import koda_to_autoep, moe_blocks
    from koda.objectives.language_model import next_token_loss
    from koda.pretrain.isometry import OrthoPenalty, gram_deviation
    from tests.helpers.tiny import TINY

    rank, world = comm.rank(), comm.world_size()
    torch.manual_seed(0)
    reference = KodaForCausalLM(TINY)
    blocks = moe_blocks(n for n, _ in reference.named_parameters())
    full = koda_to_autoep({n: p.detach() for n, p in reference.named_parameters()}, blocks)
    tokens = torch.randint(0, TINY.vocab_size, (STEPS + 1, world, MICRO, SEQ + 1),
                           generator=torch.Generator().manual_seed(1))
    out: dict = {}

    engine, plan = _engine()
    probe = OrthoPenalty(engine.module, PATTERNS, expert_scale=plan.ep_size)
    out["names"] = probe.names
    reference_value = sum(float(gram_deviation(full[name].float()).sum()) for name in probe.names)

    # one step on the penalty alone (CE x 0 keeps every parameter in the backward)
    engine.train()
    batch = tokens[0, rank]
    ce = next_token_loss(engine(batch[:, :-1]), batch[:, 1:])
    penalty = probe.take()
    out["value"] = [_mean_over_ranks(penalty.detach()), reference_value]
    engine.backward(0.0 * ce + lam * penalty)
    engine.step()
    after = full_weights(engine.module, probe.names)
    out["update"] = {}
    for name in probe.names:
        w = full[name].double()
        if w.dim() == 3:                 # this rank's experts: contiguous rows, ep rank = rank (ep = world)
            local = w.shape[0] // plan.ep_size
            w = w[rank * local:(rank + 1) * local]
        copy = w.clone().requires_grad_(True)
        gram_deviation(copy).sum().backward()
        expected = w - LR * lam * copy.grad
        out["update"][name] = [float((after[name].double() - expected).abs().max()),
                               float((expected - w).abs().max())]

    # training: CE + lam x penalty, and CE alone, from the same start
    for label, weight in (("with", lam), ("without", 0.0)):
        engine, _ = _engine()
        probe = OrthoPenalty(engine.module, PATTERNS, expert_scale=plan.ep_size)
        engine.train()
        trace = []
        for step in range(1, STEPS + 1):
            batch = tokens[step, rank]
            ce = next_token_loss(engine(batch[:, :-1]), batch[:, 1:])
            penalty = probe.take()
            trace.append(_mean_over_ranks(penalty.detach()))
            engine.backward(ce + weight * penalty)
            engine.step()
        out[label] = trace
    return out
