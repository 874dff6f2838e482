"""Rank jobs for the construction tests (run through tests.helpers.ranks.run_ranks)."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from tests.helpers.tiny import TINY

# Full fp32 size ~0.5 GB (122M parameters, 16 layers): far above what one rank's share plus
# one layer costs, and far below the machine's memory when every rank builds it whole.
BIG = TINY.replace(vocab_size=4096, d_model=512, n_layers=16, n_heads=8, n_kv_heads=4, ffn_hidden=1024)


def _plan(model, world, bf16=False, optimizer=True, autoep=True):
    from koda.distributed import ds_config

    raw = copy.deepcopy(ds_config.load("zero3_ep_smoke.json"))
    raw["scheduler"]["params"].update(warmup_num_steps=1, warmup_min_ratio=1.0)   # full learning rate at once
    if not optimizer:
        del raw["optimizer"], raw["scheduler"]
    if not autoep:
        del raw["expert_parallel"]
    return ds_config.resolve(raw, model=model, world_size=world, train_steps=10, bf16_supported=bf16)


def _batch(vocab: int, rank: int) -> torch.Tensor:
    return torch.randint(0, vocab, (4, 33), generator=torch.Generator().manual_seed(100 + rank))   # [B, S+1]


def actor_against_plain_builds(full_build: bool) -> dict:
    """The fp32 and the bf16 actor, one after the other in this process: ``{dtype: result}``."""
    return {name: _actor_against_plain_build(full_build, bf16) for name, bf16 in (("fp32", False), ("bf16", True))}


def _actor_against_plain_build(full_build: bool, bf16: bool) -> dict:
    """Build the actor (tiny model, AutoEP 2) and compare every weight this rank holds with a
    plain ``KodaForCausalLM`` built without DeepSpeed from the same seed; then train 3 steps
    (DeepSpeed's first step leaves the weights unchanged here, so the third loss is the one that moves)."""
    from deepspeed.utils import safe_get_full_fp32_param

    from koda.distributed import comm
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM
    from koda.objectives import next_token_loss

    plan = _plan(TINY, comm.world_size(), bf16=bf16)
    torch.manual_seed(0)
    reference = {k: v.to(plan.dtype).float() for k, v in KodaForCausalLM(TINY).state_dict().items()}
    torch.manual_seed(0)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, TINY), plan, full_build=full_build)
    F = TINY.ffn_hidden
    mismatched, compared = [], 0
    for name, param in engine.module.named_parameters():
        value = safe_get_full_fp32_param(param)          # dense: whole; experts: this rank's [E/ep, ...]
        if ".mlp.experts." in name:
            layer = engine.module.get_submodule(name.rsplit(".experts.", 1)[0])
            lo, hi = layer.ep_rank * layer.num_local_experts, (layer.ep_rank + 1) * layer.num_local_experts
            prefix = name.rsplit(".", 1)[0]
            gate_up, down = reference[f"{prefix}.gate_up_proj"][lo:hi], reference[f"{prefix}.down_proj"][lo:hi]
            expected = {"w1": gate_up[:, :F], "w3": gate_up[:, F:], "w2": down}[name.rsplit(".", 1)[1]]
        else:
            expected = reference[name.replace(".mlp.router.gate.", ".mlp.gate.")]
        compared += 1
        if value.shape != expected.shape or not torch.equal(value, expected):
            mismatched.append(name)
    layer = engine.module.model.layers[0].mlp
    losses = []
    batch = _batch(TINY.vocab_size, comm.rank())
    for _ in range(3):
        loss = next_token_loss(engine(batch[:, :-1]), batch[:, 1:])
        engine.backward(loss)
        engine.step()
        losses.append((comm.all_reduce_sum(loss.detach().float().reshape(1)) / comm.world_size()).item())
    return {"layer_type": type(layer).__name__, "ep_rank": int(layer.ep_rank),
            "local_experts": int(layer.num_local_experts), "compared": compared, "mismatched": mismatched,
            "losses": losses}


def construction_peak(full_build: bool) -> dict:
    """Peak resident growth of this rank while the BIG actor is built (AutoEP 2, no optimizer:
    only the network itself is allocated), and the model's full fp32 size."""
    from koda.distributed import comm
    from koda.distributed.engine import build_engine
    from koda.distributed.host_memory import PeakWindow
    from koda.model import KodaForCausalLM

    plan = _plan(BIG, comm.world_size(), optimizer=False)
    torch.manual_seed(0)
    comm.barrier()
    with PeakWindow() as window:
        engine = build_engine("actor", functools.partial(KodaForCausalLM, BIG), plan, full_build=full_build)
    full = sum(int(getattr(p, "ds_numel", p.numel())) for p in engine.module.parameters())
    experts = engine.module.model.layers[0].mlp
    return {"growth": window.growth, "layer_type": type(experts).__name__,
            "full_fp32_bytes_after_autoep": 4 * full}


class ValueNet(nn.Module):
    """A small dense second network (a critic's shape): tokens [B, S] -> values [B, S]."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(self.embed(tokens)))).squeeze(-1)


def two_networks_in_one_process() -> dict:
    """The actor (AutoEP) and a dense ValueNet built one after the other in this process, both
    partitioned at construction; each trains. Also: nesting one build inside another
    is refused."""
    from koda.distributed import comm
    from koda.distributed.construct import construct
    from koda.distributed.engine import build_engine
    from koda.errors import KodaError
    from koda.model import KodaForCausalLM
    from koda.objectives import next_token_loss

    world = comm.world_size()
    torch.manual_seed(0)
    actor = build_engine("actor", functools.partial(KodaForCausalLM, TINY), _plan(TINY, world))
    torch.manual_seed(1)
    critic = build_engine("critic", functools.partial(ValueNet, TINY.vocab_size, 64),
                          _plan(TINY, world, autoep=False))
    partitioned = {name: (int(p.ds_tensor.numel()), int(p.ds_numel)) for name, p in critic.module.named_parameters()}
    batch = _batch(TINY.vocab_size, comm.rank())
    changes = {}
    for engine in (actor, critic):
        before = {n: p.ds_tensor.detach().clone() for n, p in engine.module.named_parameters()}
        for _ in range(3):           # the schedule's first step has lr 0; two that move the weights
            out = engine(batch[:, :-1])
            loss = next_token_loss(out, batch[:, 1:]) if engine is actor else out.pow(2).mean()
            engine.backward(loss)
            engine.step()
        changes[engine.name] = [n for n, p in engine.module.named_parameters() if torch.equal(before[n], p.ds_tensor)]
    refused = ""
    try:
        construct("outer", lambda: construct("inner", functools.partial(ValueNet, 8, 8), _plan(TINY, world)),
                  _plan(TINY, world))
    except KodaError as err:
        refused = str(err)
    return {"rank": comm.rank(), "unchanged": changes, "partitioned": partitioned, "refused": refused}
