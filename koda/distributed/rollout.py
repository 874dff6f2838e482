"""Rollouts from the live ZeRO-3 / AutoEP actor: gather once per phase, decode in lockstep.

Why a replica. ZeRO-3 fetches a module's parameters in a forward-pre hook and frees them
in a forward hook, so decoding on ``engine.module`` all-gathers every dense weight again
for every token; ``zero.GatheredParameters`` cannot prevent it (the hooks free what it
gathered). DeepSpeed 0.19.8 offers two ways out: remove the hooks from the live module for
the phase (``parameter_offload._remove_module_hooks`` and re-registering afterwards,
TRL's route), or decode on a hook-free copy. We copy: removing hooks edits private
optimizer state that the next training forward relies on (an exception mid-rollout would
leave the engine without hooks), and the live module carries KODA's own forward hooks
(``RouterProbe`` on every ``gate``) and AutoEP's ``tokens_per_expert`` buffer, which a
rollout must not feed.

The copy (``gathered_actor``) is the same module tree, same classes, same ``forward`` code,
with no hooks and plain full tensors: dense parameters all-gathered over the data-parallel
group, expert parameters over the expert-data-parallel group, so each rank holds only its
own E/ep experts and AutoEP's all-to-all still runs per step, inside AutoEP's own forward.
Memory: the dense weights in full plus this rank's experts, for the length of the phase.
The copy is a snapshot: enter a new phase after every optimizer step.

ZeRO-3 also replaces ``torch.nn.functional.linear`` for the whole process by an autograd
Function that can re-gather a weight in backward (``deepspeed/runtime/zero/linear.py``);
each call binds its arguments through ``inspect``, a large share of a small model's decode
step. Rollouts need no backward, so the phase puts torch's own ``linear`` back while it
runs and restores DeepSpeed's on exit (measured by ``tools/bench_rollout.py``).

Where the experts live during a phase (``experts``):

* ``"local"`` (the default): each AutoEP layer's experts are also all-gathered over the
  expert-parallel group, once per phase, and the layer is replaced in the replica by KODA's
  own ``MoEBlock`` holding all E experts (``koda.naming``'s AutoEP -> KODA layout: w1 and w3
  stacked into ``gate_up_proj``, w2 as ``down_proj``; the same routing, see
  ``koda.model.moe``). The replica is then the whole model on every rank: a decode step
  runs no collective at all, so each rank decodes its own prompts at its own pace, like the
  standalone generator, and the ranks agree once, at the end of the phase, on whether any
  of them failed. Memory: the full model per rank for the length of the phase.
* ``"parallel"``: each rank keeps its E/ep experts and AutoEP's all-to-all runs in every
  decode step, three collectives per MoE layer per token, in lockstep
  (``koda.infer.lockstep``); for models whose experts do not fit on one rank. On the smoke
  model the all-to-all was 41 % of generation time, and rollouts ran at 0.35x the standalone
  generator (``tools/bench_rl.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from koda.data.tokenizer import EOS, PAD
from koda.distributed import comm
from koda.errors import KodaError
from koda.infer.config import GenerationConfig
from koda.infer.lockstep import Finished, Rollout, alone, lockstep_generate

EXPERTS = ("local", "parallel")      # where the experts live during a rollout phase (see above)


def _plain(module: nn.Module, tensors: dict[int, torch.Tensor], memo: dict[int, nn.Module]) -> nn.Module:
    """A hook-free shallow copy of `module` whose parameters are `tensors[id(param)]`."""
    if id(module) in memo:
        return memo[id(module)]
    clone = module.__class__.__new__(module.__class__)
    state = dict(module.__dict__)
    for key, value in state.items():
        if "hooks" in key and isinstance(value, dict):       # nn.Module's hook registries
            state[key] = type(value)()
    state["_parameters"] = {name: None if p is None else nn.Parameter(tensors[id(p)], requires_grad=False)
                            for name, p in module._parameters.items()}
    state["_buffers"] = {name: None if b is None else b.detach().clone() for name, b in module._buffers.items()}
    state["_modules"] = {}
    clone.__dict__.update(state)
    memo[id(module)] = clone
    clone._modules = {name: None if child is None else _plain(child, tensors, memo)
                      for name, child in module._modules.items()}
    return clone


def _gather_all(module: nn.Module) -> dict[int, torch.Tensor]:
    """Full copies of every parameter, one module at a time (peak: one module gathered twice).

    Every rank walks the same tree in the same order, so the all-gathers pair up; expert
    parameters gather only within their expert-data-parallel group (this rank's experts)."""
    from deepspeed import zero

    tensors: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        params = [p for p in sub._parameters.values() if p is not None and id(p) not in tensors]
        if not params:
            continue
        with zero.GatheredParameters(params):
            for p in params:
                tensors[id(p)] = p.data.detach().clone()
    return tensors


def _is_autoep(module: nn.Module) -> bool:
    return bool(getattr(module, "_is_autoep_layer", False))


def _all_experts(layer: nn.Module, local: torch.Tensor) -> torch.Tensor:
    """Collective over `layer`'s expert-parallel group: this rank's experts [E/ep, ...] ->
    all E [E, ...], in expert order (AutoEP's uniform placement: group rank r holds the
    contiguous experts [r * E/ep, (r + 1) * E/ep))."""
    if layer.ep_size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(layer.ep_size)]
    torch.distributed.all_gather(parts, local.contiguous(), group=layer.ep_group)
    return torch.cat(parts)


def _moe_block(layer: nn.Module, tensors: dict[int, torch.Tensor], cfg) -> nn.Module:
    """Collective: KODA's ``MoEBlock`` with all E experts of AutoEP layer `layer`, whose own
    parameters are in `tensors` (gathered over the data-parallel groups)."""
    from koda.model.moe import MoEBlock

    experts = layer.experts
    if layer.num_local_experts * layer.ep_size != layer.num_experts or layer.expert_bias is not None:
        raise KodaError("rollout with experts='local': AutoEP layer with a non-uniform placement or an expert "
                        "bias; use experts='parallel'")
    w1, w2, w3 = (_all_experts(layer, tensors[id(w)]) for w in (experts.w1, experts.w2, experts.w3))
    with torch.device("meta"):
        block = MoEBlock(cfg)
    block.gate.weight = nn.Parameter(tensors[id(layer.router.gate.weight)], requires_grad=False)
    block.experts.gate_up_proj = nn.Parameter(torch.cat([w1, w3], dim=1), requires_grad=False)   # [E, 2F, D]
    block.experts.down_proj = nn.Parameter(w2, requires_grad=False)                                # [E, D, F]
    return block


@contextlib.contextmanager
def torch_linear() -> Iterator[None]:
    """torch's own ``F.linear`` for the block, if ZeRO-3 replaced it (see above)."""
    from deepspeed.runtime.zero.linear import zero3_linear_wrap
    from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses as patcher

    original = getattr(patcher, "linear_bk", None)
    if original is None or torch.nn.functional.linear is not zero3_linear_wrap:
        yield
        return
    torch.nn.functional.linear = original
    try:
        yield
    finally:
        torch.nn.functional.linear = zero3_linear_wrap


def replica_of(module: nn.Module, experts: str = "local") -> nn.Module:
    """Collective: a hook-free replica of an engine's module (see above), in eval mode; `experts`
    "local": with every expert on every rank, "parallel": this rank's experts. A snapshot:
    later optimizer steps do not reach it. Run it inside ``torch_linear()``."""
    if experts not in EXPERTS:
        raise KodaError(f"rollout experts must be one of {', '.join(EXPERTS)}, got {experts!r}")
    tensors = _gather_all(module)
    memo: dict[int, nn.Module] = {}
    if experts == "local":
        for sub in module.modules():                  # the same order on every rank: the gathers pair up
            if _is_autoep(sub):
                memo[id(sub)] = _moe_block(sub, tensors, module.cfg)
    replica = _plain(module, tensors, memo)
    return replica.eval()


@contextlib.contextmanager
def gathered_actor(module: nn.Module, experts: str = "local") -> Iterator[nn.Module]:
    """Collective: ``replica_of(module, experts)`` for one rollout phase, freed on exit."""
    replica = replica_of(module, experts)
    try:
        with torch_linear():
            yield replica
    finally:
        del replica


def _all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    device = "cpu" if torch.distributed.get_backend() == "gloo" else torch.device("cuda", torch.cuda.current_device())
    out = values.to(device)
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    return out.cpu()


def agree_across_ranks(still_generating: bool, failed: bool) -> tuple[bool, list[int]]:
    """One all-reduce per decode step: [anyone generating, failed on rank 0, ..., rank W-1]."""
    if not torch.distributed.is_initialized():
        return still_generating, [0] if failed else []
    flags = torch.zeros(1 + comm.world_size(), dtype=torch.int32)
    flags[0] = int(still_generating)
    flags[1 + comm.rank()] = int(failed)
    flags = _all_reduce_max(flags).tolist()
    return bool(flags[0]), [r for r, f in enumerate(flags[1:]) if f]


class RolloutPhase:
    """Generation from one gathered snapshot of the actor; use ``rollout_phase(engine)``."""

    def __init__(self, replica: nn.Module, experts: str = "local", gather_s: float = 0.0):
        self.model, self.experts = replica, experts
        self.gather_s = gather_s          # seconds this rank spent building the replica

    def generate(self, prompts: list[list[int]], cfg: GenerationConfig, *, step: int, eos_id: int | None = EOS,
                 pad_id: int = PAD, should_stop: Callable[[int, list[int]], bool] | None = None,
                 on_finish: Finished | None = None) -> Rollout:
        """Collective: every rank calls it (with its own prompts, possibly none) the same
        number of times. `step` (the training step) is folded into the sampling seed;
        `on_finish` sees the prompts that finish, step by step (``lockstep_generate``). With
        experts "local" each rank decodes alone and the ranks meet once, at the end; an error
        on one rank is an error on every rank either way."""
        if self.experts == "parallel":
            return lockstep_generate(self.model, prompts, cfg, agree=agree_across_ranks, rank=comm.rank(),
                                     step=step, eos_id=eos_id, pad_id=pad_id, should_stop=should_stop,
                                     on_finish=on_finish)
        rollout = error = None
        try:
            rollout = lockstep_generate(self.model, prompts, cfg, agree=alone, rank=comm.rank(), step=step,
                                        eos_id=eos_id, pad_id=pad_id, should_stop=should_stop,
                                        on_finish=on_finish)
        except Exception as e:  # noqa: BLE001 - reported to every rank below, then re-raised here
            error = e
        _, failed = agree_across_ranks(False, error is not None)
        if error is not None:
            raise error
        if failed:
            raise KodaError(f"rollout stopped: rank(s) {', '.join(map(str, failed))} failed")
        return rollout


@contextlib.contextmanager
def rollout_phase(engine, experts: str = "local") -> Iterator[RolloutPhase]:
    """Collective: gather the actor once, generate any number of batches, free it on exit.

        with rollout_phase(actor) as phase:
            rollout = phase.generate(prompts, GenerationConfig(strategy="sample"), step=step)
        ...train on rollout.ids / rollout.logprobs / rollout.mask...
    """
    start = time.perf_counter()
    with gathered_actor(engine.module, experts) as replica:
        yield RolloutPhase(replica, experts, time.perf_counter() - start)
