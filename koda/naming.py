"""Parameter names of a KODA model in its three layouts, and the maps between them.

* **KODA** (``koda.model``): each MoE block ``model.layers.N.mlp`` has a router ``gate``
  (Linear [E, D]) and fused experts ``experts.gate_up_proj`` [E, 2F, D] (gate rows first) and
  ``experts.down_proj`` [E, D, F]. This is the contract DeepSpeed AutoEP detects
  (``AUTOEP_NAMING``, the ``expert_parallel`` section KODA fills in).
* **AutoEP** (a training engine's module and its ZeRO-3 checkpoints): AutoEP replaces each
  block, so the router becomes ``<block>.router.gate.weight`` and the experts three grouped
  tensors, experts first (``deepspeed/moe/ep_repack.py``, "gate_up_first")::

      <block>.experts.w1  [E, F, D]   gate projection   (rows [:F] of KODA's gate_up_proj)
      <block>.experts.w3  [E, F, D]   up projection     (rows [F:] of KODA's gate_up_proj)
      <block>.experts.w2  [E, D, F]   down projection   (KODA's down_proj, unchanged)

  Inside a running engine each rank holds E/ep of the E experts (see
  ``koda.distributed.gradients``); the shapes above are the full ones.
* **Hugging Face Mixtral** (the export format): per expert
  ``model.layers.N.block_sparse_moe.experts.{e}.w1/w3.weight`` [F, D] (gate, up) and
  ``.w2.weight`` [D, F], router ``model.layers.N.block_sparse_moe.gate.weight`` [E, D].

Every other name (attention, norms, embeddings, head, dense MLPs) is the same in all three.
The mappings work on shapes and lazily produced tensors, so a converter never holds more
than the tensors it is writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from koda.errors import KodaError

# ------------------------------------------------------------------ KODA's MoE block contract
BLOCK_PATTERN = r"model\.layers\.\d+\.mlp"
AUTOEP_NAMING = {                       # the expert_parallel fields that describe KODA's block
    "moe_layer_pattern": BLOCK_PATTERN,
    "router_pattern": "gate",
    "expert_pattern": "experts",
    "expert_w1": "gate_up_proj",
    "expert_w2": "down_proj",
}
# The router Linear in either layout (KODA ``...mlp.gate``, AutoEP ``...mlp.router.gate``),
# as a module name; group 1 is the layer index.
ROUTER_MODULE = re.compile(r"layers\.(\d+)\.mlp(?:\.router)?\.gate$")

# ------------------------------------------------------------------ AutoEP <-> KODA
_ROUTER = ("router.gate.weight", "gate.weight")          # (AutoEP suffix, KODA suffix) under a block
_DOWN = ("experts.w2", "experts.down_proj")
_GATE, _UP, _GATE_UP = "experts.w1", "experts.w3", "experts.gate_up_proj"
_MOE_PARAM = re.compile(rf"({BLOCK_PATTERN})\."
                        r"(?:router\.gate\.weight|gate\.weight|experts\.(?:w[123]|gate_up_proj|down_proj))")
_AUTOEP_MOE = re.compile(rf"((?:.+\.)?{BLOCK_PATTERN})\.(router\.gate\.weight|experts\.w[123])")


def moe_blocks(names: Iterable[str]) -> list[str]:
    """The MoE block paths (``model.layers.N.mlp``) among parameter names of either the KODA
    or the AutoEP layout, in order (dense MLPs, ``mlp.gate_proj`` etc., are not blocks)."""
    blocks: dict[str, None] = {}
    for name in names:
        match = _MOE_PARAM.fullmatch(name)
        if match:
            blocks[match.group(1)] = None
    return list(blocks)


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


def koda_name(name: str) -> str:
    """The KODA name of one parameter of either layout: an AutoEP router or expert tensor
    becomes the KODA tensor it was cut from (w1 and w3 both ``experts.gate_up_proj``), any other
    name is itself. For rules written against KODA names (``optimizer.muon.skip``) that the
    engine applies to its AutoEP parameters."""
    match = _AUTOEP_MOE.fullmatch(name)
    if match is None:
        return name
    block, suffix = match.groups()
    return f"{block}." + {_ROUTER[0]: _ROUTER[1], _DOWN[0]: _DOWN[1], _GATE: _GATE_UP, _UP: _GATE_UP}[suffix]


def assemble(sources: tuple[str, ...], get: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """One KODA tensor from its AutoEP sources: w1 and w3 stacked along the row axis
    (gate rows first, as ``SwiGLUExperts`` chunks them), anything else as it is."""
    if len(sources) == 2:
        return torch.cat([get(sources[0]), get(sources[1])], dim=1)      # [E, 2F, D]
    return get(sources[0])


def koda_to_autoep(state: dict[str, torch.Tensor], blocks: Iterable[str]) -> dict[str, torch.Tensor]:
    """The inverse mapping (KODA names -> AutoEP names), for round-trip checks, for seeding an
    AutoEP engine from a standalone model and for comparing an engine's gradients with a
    plain model's. `blocks`: the KODA MoE block paths (``model.layers.N.mlp``)."""
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


# ------------------------------------------------------------------ KODA <-> Hugging Face Mixtral
_KODA_MLP = re.compile(r"model\.layers\.(\d+)\.mlp\.(gate\.weight|experts\.gate_up_proj|experts\.down_proj)")
_HF_MOE = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.(gate\.weight|experts\.(\d+)\.(w[123])\.weight)")


def hf_plan(koda_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple]:
    """HF Mixtral name -> (shape, KODA source name, slicer), grouped by source so a producer
    that caches its last KODA tensor builds each one once. The caller checks that the model
    has Mixtral's layout (``koda.checkpoint.hf_mixtral.check_exportable``)."""
    plan: dict[str, tuple] = {}
    for name, shape in koda_shapes.items():
        match = _KODA_MLP.fullmatch(name)
        if match is None:
            plan[name] = (tuple(shape), name, None)
            continue
        prefix = f"model.layers.{match.group(1)}.block_sparse_moe"
        if match.group(2) == "gate.weight":
            plan[f"{prefix}.gate.weight"] = (tuple(shape), name, None)
        elif match.group(2) == "experts.gate_up_proj":
            E, F2, D = shape
            F = F2 // 2
            for e in range(E):
                plan[f"{prefix}.experts.{e}.w1.weight"] = ((F, D), name, (e, 0, F))
                plan[f"{prefix}.experts.{e}.w3.weight"] = ((F, D), name, (e, F, 2 * F))
        else:
            E, D, F = shape
            for e in range(E):
                plan[f"{prefix}.experts.{e}.w2.weight"] = ((D, F), name, (e, None, None))
    return plan


def produce_hf(entry: tuple, get_koda: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """The HF tensor an ``hf_plan`` entry describes, cut from its KODA source."""
    _, source, slicer = entry
    tensor = get_koda(source)
    if slicer is None:
        return tensor
    expert, start, stop = slicer
    return tensor[expert] if start is None else tensor[expert, start:stop]


def koda_state_from_hf(hf_state: dict[str, torch.Tensor], n_experts: int, n_layers: int) -> dict[str, torch.Tensor]:
    """Fuse per-expert Mixtral tensors back into KODA's [E, 2F, D] / [E, D, F] layout."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        match = _HF_MOE.fullmatch(name)
        if match is None:
            out[name] = tensor
        elif match.group(3) is None:
            out[f"model.layers.{match.group(1)}.mlp.gate.weight"] = tensor
        else:
            experts.setdefault((int(match.group(1)), match.group(4)), {})[int(match.group(3))] = tensor
    for layer in range(n_layers):
        parts = {w: experts.pop((layer, w), {}) for w in ("w1", "w2", "w3")}
        if not any(parts.values()):
            continue
        for w, found in parts.items():
            if sorted(found) != list(range(n_experts)):
                raise KodaError(f"Mixtral weights: layer {layer} has {w} for experts {sorted(found)}, "
                                f"expected 0..{n_experts - 1}")
        stack = {w: torch.stack([parts[w][e] for e in range(n_experts)]) for w in parts}
        out[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.cat([stack["w1"], stack["w3"]], dim=1)
        out[f"model.layers.{layer}.mlp.experts.down_proj"] = stack["w2"]
    if experts:
        raise KodaError(f"Mixtral weights: experts for layer {min(experts)[0]} beyond num_hidden_layers")
    return out
