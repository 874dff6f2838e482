"""The gradient path between backward and step, for preconditioners such as K-FAC.

Under ZeRO-3 a parameter's gradient is partitioned over the ranks as soon as backward
finishes, so ``param.grad`` is empty; DeepSpeed's ``safe_*_grad`` functions reach the
partitions. This module is their only caller, and it fixes what they leave implicit for
AutoEP's experts: an expert parameter (``...mlp.experts.w1/w2/w3``, experts first) lives
as E/ep experts per rank, partitioned over the expert-data-parallel group only, so
``safe_get_full_grad`` returns this rank's experts, not all E, and ``safe_set_full_grad``
narrows any flat value to this rank's slice without looking at its shape.

Three views of one gradient, each with its shape checked on ``set``:

* ``get`` / ``set``: the full gradient, the parameter's logical shape ([E, ...] for experts,
  all-gathered over the expert-parallel group on ``get``).
* ``get_experts`` / ``set_experts``: an expert parameter's local experts [E/ep, ...] and the
  global index of each row (a preconditioner that owns whole experts works here).
* ``get_local`` / ``set_local``: this rank's ZeRO-3 partition, a flat slice; no communication
  (a preconditioner that owns a layer need not gather every parameter on every rank).

``get`` and ``get_experts`` are collectives (every rank calls them for the same parameters in
the same order); the ``set`` family and ``get_local`` only touch this rank's partition.

A ``GradientTransform`` is any callable taking a ``GradientAccess``; the ``Engine`` runs its
transforms at each gradient-accumulation boundary, after the last backward and before the
optimizer step (so the clipping and the step see the transformed gradients).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from koda.errors import KodaError


@dataclass(frozen=True)
class ExpertGrad:
    """This rank's experts of one expert parameter."""
    values: torch.Tensor              # [E_local, ...] rows in local order
    experts: tuple[int, ...]          # global expert index of each row


@dataclass(frozen=True)
class GradPartition:
    """This rank's ZeRO-3 slice of one gradient: elements [start, start + n) of the
    flattened tensor of shape `of_shape` (the full shape of a dense parameter, the
    local-experts shape [E_local, ...] of an expert parameter, whose rows are `experts`)."""
    values: torch.Tensor              # [n] fp32, a copy
    start: int
    of_shape: tuple[int, ...]
    experts: tuple[int, ...] | None   # None for a dense parameter


@dataclass(frozen=True)
class _Experts:
    """Where an AutoEP expert parameter's E experts live (DeepSpeed's placement record)."""
    mine: tuple[int, ...]                     # this rank's global experts, local row order
    by_rank: tuple[tuple[int, ...], ...]      # every EP rank's, by rank in the EP group
    group_name: str                           # DeepSpeed's expert-parallel group name
    shape: tuple[int, ...]                    # the logical full shape [E, ...]


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _expert_layout(name: str, param: torch.nn.Parameter) -> _Experts | None:
    """The placement AutoEP records on each expert parameter (``ds_autoep_uc_meta``), or None
    for a parameter every rank holds whole (replicated family)."""
    if getattr(param, "ds_zero_placement_family", None) != "autoep_expert":
        return None
    from deepspeed.checkpoint.autoep_affine import autoep_experts_for_rank
    from deepspeed.checkpoint.constants import (
        AUTOEP_EXPERT_PLACEMENT,
        AUTOEP_PARAM_EP_RANK,
        AUTOEP_PARAM_LOCAL_EXPERTS,
        AUTOEP_PARAM_LOGICAL_SHAPE,
        AUTOEP_PLACEMENT_EP_SIZE,
        DS_AUTOEP_UC_META,
    )
    from deepspeed.utils import groups

    meta = getattr(param, DS_AUTOEP_UC_META, None)
    if meta is None:
        raise KodaError(f"gradients: expert parameter {name} carries no AutoEP placement record")
    placement = meta[AUTOEP_EXPERT_PLACEMENT]
    by_rank = tuple(tuple(autoep_experts_for_rank(placement, r)) for r in range(placement[AUTOEP_PLACEMENT_EP_SIZE]))
    mine = tuple(meta[AUTOEP_PARAM_LOCAL_EXPERTS])
    if len({len(e) for e in by_rank}) != 1:
        raise KodaError(f"gradients: {name} has an uneven expert placement {by_rank}; only uniform is supported")
    group_name = param.ds_zero_partition_group_name
    if torch.distributed.is_initialized():
        ep_rank = torch.distributed.get_rank(group=groups._get_expert_parallel_group(group_name))
        if ep_rank != meta[AUTOEP_PARAM_EP_RANK] or by_rank[ep_rank] != mine:
            raise KodaError(f"gradients: {name} placement says EP rank {meta[AUTOEP_PARAM_EP_RANK]}, "
                            f"experts {mine}, but this process is rank {ep_rank} of group {group_name}")
    return _Experts(mine, by_rank, group_name, tuple(meta[AUTOEP_PARAM_LOGICAL_SHAPE]))


class GradientAccess:
    """Gradients of one engine's trainable parameters, by the engine module's names (after
    AutoEP's replacement; ``koda.naming`` maps them to KODA's)."""

    def __init__(self, module: torch.nn.Module):
        self._params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self._experts = {name: layout for name, p in self._params.items()
                         if (layout := _expert_layout(name, p)) is not None}

    def names(self) -> Iterator[str]:
        return iter(self._params)

    def parameter(self, name: str) -> torch.nn.Parameter:
        return self._param(name)

    def is_expert(self, name: str) -> bool:
        self._param(name)
        return name in self._experts

    def shape(self, name: str) -> tuple[int, ...]:
        """The full logical shape: [E, ...] for an expert parameter, whatever this rank holds."""
        if name in self._experts:
            return self._experts[name].shape
        p = self._param(name)
        return tuple(getattr(p, "ds_shape", p.shape))

    def experts(self, name: str) -> tuple[int, ...]:
        """Global indices of the experts this rank holds of expert parameter `name`, in row order."""
        return self._layout(name).mine

    # ---------------------------------------------------------------- full gradients
    def get(self, name: str) -> torch.Tensor:
        """The full gradient of `name`, shape ``shape(name)``, fp32 under ZeRO (collective)."""
        if name not in self._experts:
            return self._full_or_local_experts(name)
        layout = self._experts[name]
        local = self._full_or_local_experts(name).contiguous()                  # [E_local, ...]
        if len(layout.by_rank) == 1:
            return local
        from deepspeed.utils import groups

        chunks = [torch.empty_like(local) for _ in layout.by_rank]
        torch.distributed.all_gather(chunks, local, group=groups._get_expert_parallel_group(layout.group_name))
        full = local.new_empty(layout.shape)                                      # [E, ...]
        for experts, chunk in zip(layout.by_rank, chunks, strict=True):
            full[list(experts)] = chunk
        return full

    def set(self, name: str, grad: torch.Tensor) -> None:
        """Replace the gradient of `name` by `grad` of shape ``shape(name)``; for an expert
        parameter this rank keeps the rows of its own experts (no communication)."""
        self._check(name, grad, self.shape(name), "set")
        if name in self._experts:
            grad = grad[list(self._experts[name].mine)]                            # [E_local, ...]
        self._write_full(name, grad)

    # ---------------------------------------------------------------- local experts
    def get_experts(self, name: str) -> ExpertGrad:
        """This rank's experts of expert parameter `name` (a collective over the
        expert-data-parallel group only, which ZeRO-3 partitions them over)."""
        layout = self._layout(name)
        return ExpertGrad(self._full_or_local_experts(name), layout.mine)

    def set_experts(self, name: str, values: torch.Tensor) -> None:
        """Replace this rank's experts of `name`: values [E_local, ...] in ``experts(name)`` order."""
        layout = self._layout(name)
        self._check(name, values, (len(layout.mine), *layout.shape[1:]), "set_experts")
        self._write_full(name, values)

    # ---------------------------------------------------------------- ZeRO-3 partitions
    def get_local(self, name: str) -> GradPartition:
        """This rank's ZeRO-3 partition of the gradient of `name` (no communication)."""
        from deepspeed.utils import safe_get_local_grad

        p, start, n = self._partition(name)
        layout = self._experts.get(name)
        return GradPartition(safe_get_local_grad(p)[:n].clone(), start, tuple(p.ds_shape),
                             layout.mine if layout else None)

    def set_local(self, name: str, values: torch.Tensor) -> None:
        """Replace this rank's partition of `name`: values [n] as ``get_local`` returned them."""
        from deepspeed.utils import safe_get_local_grad, safe_set_local_grad

        p, _, n = self._partition(name)
        self._check(name, values, (n,), "set_local")
        buffer = safe_get_local_grad(p).clone()               # [partition size], padding at the tail
        buffer[:n] = values
        safe_set_local_grad(p, buffer)

    # ---------------------------------------------------------------- internals
    def _param(self, name: str) -> torch.nn.Parameter:
        try:
            return self._params[name]
        except KeyError:
            raise KodaError(f"gradients: no trainable parameter {name!r}") from None

    def _layout(self, name: str) -> _Experts:
        self._param(name)
        if name not in self._experts:
            raise KodaError(f"gradients: {name} is not an expert parameter (use get/set)")
        return self._experts[name]

    @staticmethod
    def _check(name: str, value: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
        if tuple(value.shape) != tuple(expected):
            wanted = "[" + ", ".join(str(d) for d in expected) + "]"
            raise KodaError(f"gradients.{what}({name}): expected shape {wanted}, got {_shape(value)}")

    def _full_or_local_experts(self, name: str) -> torch.Tensor:
        """DeepSpeed's 'full' gradient: whole for a dense parameter, this rank's experts
        [E_local, ...] for an expert one (gathered over the parameter's partition group)."""
        from deepspeed.utils import safe_get_full_grad

        grad = safe_get_full_grad(self._param(name))
        if grad is None:
            raise KodaError(f"gradients: {name} has no gradient (get after backward, before step)")
        return grad

    def _write_full(self, name: str, value: torch.Tensor) -> None:
        from deepspeed.utils import safe_set_full_grad

        safe_set_full_grad(self._param(name), value)

    def _partition(self, name: str) -> tuple[torch.nn.Parameter, int, int]:
        """(param, start, n): this rank's partition holds elements [start, start + n) of the
        flattened ``ds_shape`` tensor; the last rank's partition may carry padding past n."""
        p = self._param(name)
        if not hasattr(p, "ds_id"):
            raise KodaError(f"gradients: {name} is not a ZeRO-3 partitioned parameter (get_local/set_local "
                            "need ZeRO stage 3; use get/set)")
        size = p.partition_numel()
        start = torch.distributed.get_rank(group=p.ds_process_group) * size
        return p, start, max(0, min(size, p.ds_numel - start))


class GradientTransform(Protocol):
    def __call__(self, grads: GradientAccess) -> None: ...
