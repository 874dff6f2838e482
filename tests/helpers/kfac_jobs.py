"""Rank job for tests/optim/test_kfac_zero3.py (run through tests.helpers.ranks)."""

from __future__ import annotations

import functools

MICRO, SEQ = 2, 16
SKIP = ("lm_head", "experts")          # dense layers only: experts on several ranks are refused


def dense_kfac_under_zero3() -> dict:
    """One step of the tiny model on 2 ranks (ZeRO-3 + AutoEP, fp32) with DataParallelKFAC as
    the engine's gradient transform; every preconditioned gradient compared with one process's
    K-FAC on the same global batch. Returns {engine name: [max diff, max |reference|]}."""
    import torch

    from koda.distributed import comm
    from koda.model import KodaForCausalLM
    from koda.naming import koda_to_autoep, moe_blocks
    from koda.objectives.language_model import next_token_loss
    from koda.optim import KFACPreconditioner, ParamGrads
    from koda.optim.data_parallel import DataParallelKFAC
    from tests.helpers.gradient_jobs import _config, _engine
    from tests.helpers.kfac_settings import textbook
    from tests.helpers.tiny import TINY

    cfg = textbook(kl_clip=1e-3, skip=SKIP)
    world, rank = comm.world_size(), comm.rank()
    torch.manual_seed(0)
    reference = KodaForCausalLM(TINY)
    torch.manual_seed(0)
    engine = _engine(functools.partial(KodaForCausalLM, TINY), _config(world, 1))
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


def kfac_with_experts(out_dir: str, update_rms: bool = False) -> dict:
    """One step of the tiny model (ZeRO-3 + AutoEP, fp32, every layer but lm_head under
    K-FAC, experts included) on however many ranks launched this; the global batch is the
    same 4 sequences whatever the world size. Saves, per parameter, the preconditioned
    gradient rows this rank holds (all of a dense one; its experts, by global index).
    `update_rms`: the rescaled steps instead of the KL clip, with the raw gradients clipped
    first at a norm that acts (so the parameters K-FAC leaves, saved too, come out scaled)."""
    import torch

    from koda.distributed import comm
    from koda.model import KodaForCausalLM
    from koda.objectives.language_model import next_token_loss
    from koda.optim.data_parallel import DataParallelKFAC
    from tests.helpers.gradient_jobs import _config, _engine
    from tests.helpers.kfac_settings import textbook
    from tests.helpers.tiny import TINY

    world, rank = comm.world_size(), comm.rank()
    config = _config(world, 1)
    config["train_micro_batch_size_per_gpu"] = 4 // world
    config["train_batch_size"] = 4
    torch.manual_seed(0)
    engine = _engine(functools.partial(KodaForCausalLM, TINY), config)
    tokens = torch.randint(0, TINY.vocab_size, (4, SEQ + 1), generator=torch.Generator().manual_seed(1))
    cfg = textbook(kl_clip=None, update_rms=0.2, skip=("lm_head",)) if update_rms else textbook(
        kl_clip=1e-3, skip=("lm_head",))
    pre = DataParallelKFAC(engine.module, cfg, lr=1.0, clip=0.5 if update_rms else 0.0)
    saved: dict = {}

    def transform(grads):
        pre(grads)
        names = [u.weight for u in pre.units]
        if update_rms:       # and what K-FAC leaves (embeddings, norms, lm_head): the clipped raw gradients
            names += [n for n in pre.clipping.names if n not in names and not grads.is_expert(n)]
        for name in names:
            if grads.is_expert(name):
                saved[name] = (list(grads.experts(name)), grads.get_experts(name).values.clone())
            else:
                saved[name] = (None, grads.get(name).clone())

    engine.add_gradient_transform(transform)
    engine.train()
    micro = tokens[rank * (4 // world):(rank + 1) * (4 // world)]
    engine.backward(next_token_loss(engine(micro[:, :-1]), micro[:, 1:]))
    engine.step()
    torch.save(saved, f"{out_dir}/grads{rank}.pt")
    return {"units": sorted(u.name for u in pre.units), "kl_scale": pre.last_kl_scale,
            "raw_norm": pre.clipping.last_norm}
