"""Rank job for tests/optim/test_kfac_zero3.py (run through tests.helpers.ranks)."""

from __future__ import annotations

MICRO, SEQ = 2, 16
SKIP = ("lm_head", "experts")          # dense layers only: experts on several ranks are refused


def dense_kfac_under_zero3() -> dict:
    """One step of the tiny model on 2 ranks (ZeRO-3 + AutoEP, fp32) with DataParallelKFAC as
    the engine's gradient transform; every preconditioned gradient compared with one process's
    K-FAC on the same global batch. Returns {engine name: [max diff, max |reference|]}."""
    import torch

    from koda.distributed import comm
    from koda.distributed.kfac import DataParallelKFAC
    from koda.model import KodaForCausalLM
    from koda.naming import koda_to_autoep, moe_blocks
    from koda.objectives.language_model import next_token_loss
    from koda.optim import KFACConfig, KFACPreconditioner, ParamGrads
    from tests.helpers.gradient_jobs import _config, _engine
    from tests.helpers.tiny import TINY

    cfg = KFACConfig(kl_clip=1e-3, skip=SKIP)
    world, rank = comm.world_size(), comm.rank()
    torch.manual_seed(0)
    reference = KodaForCausalLM(TINY)
    torch.manual_seed(0)
    engine = _engine(KodaForCausalLM(TINY), _config(world, 1))
    tokens = torch.randint(0, TINY.vocab_size, (world, MICRO, SEQ + 1), generator=torch.Generator().manual_seed(1))

    batch = tokens.reshape(-1, SEQ + 1)
    ref_pre = KFACPreconditioner(reference, cfg, lr=1.0)
    next_token_loss(reference(batch[:, :-1]), batch[:, 1:]).backward()
    ref_pre.step(ParamGrads(reference))
    blocks = moe_blocks(n for n, _ in reference.named_parameters())
    expected = koda_to_autoep({n: p.grad for n, p in reference.named_parameters()}, blocks)

    pre = DataParallelKFAC(engine.module, cfg, lr=1.0)
    out: dict = {}

    def transform(grads):
        pre(grads)
        for u in pre.units:
            g = grads.get(u.weight)
            out[u.weight] = [float((g - expected[u.weight]).abs().max()), float(expected[u.weight].abs().max())]

    engine.add_gradient_transform(transform)
    engine.train()
    micro = tokens[rank]
    engine.backward(next_token_loss(engine(micro[:, :-1]), micro[:, 1:]))
    engine.step()
    out["units"] = sorted(u.name for u in pre.units)
    out["kl_scale"] = [pre.last_kl_scale, ref_pre.last_kl_scale]
    return out
