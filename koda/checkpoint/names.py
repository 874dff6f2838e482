"""AutoEP's parameter names and expert layout <-> KODA's own (``koda.model.moe``).

DeepSpeed AutoEP replaces each MoE block ``<block>`` (``model.layers.N.mlp``) by its own
layer, so a ZeRO-3 checkpoint stores the router as ``<block>.router.gate.weight`` and the
experts as three grouped tensors::

    <block>.experts.w1  [E, F, D]   gate projection   (rows [:F] of KODA's gate_up_proj)
    <block>.experts.w3  [E, F, D]   up projection     (rows [F:] of KODA's gate_up_proj)
    <block>.experts.w2  [E, D, F]   down projection   (KODA's down_proj, unchanged)

(``deepspeed/moe/ep_repack.py``, the "gate_up_first" layout that KODA's contract selects).
Every other name is the same on both sides. The mapping works on shapes and lazily
produced tensors so a converter never holds more than the tensors it is writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from koda.errors import KodaError

# AutoEP suffix under a block -> KODA suffix under the same block.
_ROUTER = ("router.gate.weight", "gate.weight")
_DOWN = ("experts.w2", "experts.down_proj")
_GATE, _UP, _GATE_UP = "experts.w1", "experts.w3", "experts.gate_up_proj"


def _split(name: str, blocks: Iterable[str]) -> tuple[str, str] | None:
    """(block, suffix) when `name` lives under one of the AutoEP blocks, else None."""
    for block in blocks:
        if name.startswith(block + "."):
            return block, name[len(block) + 1:]
    return None


def autoep_to_koda_plan(shapes: dict[str, tuple[int, ...]], blocks: Iterable[str]) -> dict[str, tuple]:
    """KODA name -> (shape, AutoEP source names), in the checkpoint's order.

    shapes: AutoEP name -> full (all-expert) shape; blocks: the AutoEP module paths
    (``ds_autoep_layers[*].module_path``). Raises KodaError on a name AutoEP should not have.
    """
    blocks = list(blocks)
    plan: dict[str, tuple] = {}
    for name, shape in shapes.items():
        where = _split(name, blocks)
        if where is None:
            plan[name] = (tuple(shape), (name,))
            continue
        block, suffix = where
        if suffix == _ROUTER[0]:
            plan[f"{block}.{_ROUTER[1]}"] = (tuple(shape), (name,))
        elif suffix == _DOWN[0]:
            plan[f"{block}.{_DOWN[1]}"] = (tuple(shape), (name,))
        elif suffix == _GATE:
            up = f"{block}.{_UP}"
            if up not in shapes or tuple(shapes[up]) != tuple(shape):
                raise KodaError(f"AutoEP block {block}: {_GATE} {tuple(shape)} has no matching {_UP}")
            e, f, d = shape
            plan[f"{block}.{_GATE_UP}"] = ((e, 2 * f, d), (name, up))
        elif suffix != _UP:
            raise KodaError(f"AutoEP block {block}: unexpected parameter {suffix!r} (not a KODA MoE block)")
    return plan


def assemble(sources: tuple[str, ...], get: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """One KODA tensor from its AutoEP sources: w1 and w3 stacked along the row axis
    (gate rows first, as ``SwiGLUExperts`` chunks them), anything else as it is."""
    if len(sources) == 2:
        return torch.cat([get(sources[0]), get(sources[1])], dim=1)      # [E, 2F, D]
    return get(sources[0])


def koda_to_autoep(state: dict[str, torch.Tensor], blocks: Iterable[str]) -> dict[str, torch.Tensor]:
    """The inverse mapping (KODA state dict -> AutoEP names), for round-trip checks and for
    seeding an AutoEP engine from a standalone model."""
    blocks = list(blocks)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        where = _split(name, blocks)
        if where is None:
            out[name] = tensor
            continue
        block, suffix = where
        if suffix == _ROUTER[1]:
            out[f"{block}.{_ROUTER[0]}"] = tensor
        elif suffix == _DOWN[1]:
            out[f"{block}.{_DOWN[0]}"] = tensor
        elif suffix == _GATE_UP:
            gate, up = tensor.chunk(2, dim=1)                                  # [E, F, D] each
            out[f"{block}.{_GATE}"], out[f"{block}.{_UP}"] = gate.contiguous(), up.contiguous()
        else:
            raise KodaError(f"MoE block {block}: unexpected parameter {suffix!r}")
    return out
