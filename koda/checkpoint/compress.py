"""``koda compress``: Tucker-compress the expert tensors of a standalone model directory.

Every MoE block's ``experts.gate_up_proj`` [E, 2F, D] and ``experts.down_proj`` [E, D, F]
is decomposed at the chosen ranks (``koda.checkpoint.tucker``; ranks are given per mode in
that stored order). The output is a normal standalone directory whose expert tensors are
the dense reconstructions, so every loader, ``koda generate`` and ``koda eval`` read it
unchanged, plus ``tucker.safetensors`` holding each tensor's core and factors (the
compressed form; its byte count is what the summary reports). Every other tensor is copied
bit for bit. The dense weights are rebuilt from the factors as stored (in the model's
dtype), so the sidecar and the model describe the same function.

The whole model is held in memory (no streaming), which suits the smoke and small sizes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from koda.checkpoint import tucker
from koda.checkpoint.export import write_model_dir
from koda.checkpoint.safetensors_io import read_sharded
from koda.checkpoint.standalone import check_state, read_config
from koda.errors import KodaError
from koda.model import KodaForCausalLM

SIDECAR = "tucker.safetensors"
KINDS = ("gate_up_proj", "down_proj")
EXPERT_TENSOR = re.compile(r"model\.layers\.\d+\.mlp\.experts\.(gate_up_proj|down_proj)")
ALL = "*"           # key of a rank triple that applies to every expert tensor


@dataclass(frozen=True)
class TensorReport:
    name: str
    shape: tuple[int, int, int]
    ranks: tucker.Ranks
    original_bytes: int      # the dense tensor in the model's dtype
    compressed_bytes: int    # core + factors in the model's dtype
    relative_error: float    # ||W - W_hat||_F / ||W||_F of the tensor written


@dataclass(frozen=True)
class CompressSummary:
    path: Path
    dtype: torch.dtype
    tensors: list[TensorReport]
    model_bytes: int         # every tensor of the source model
    compressed_model_bytes: int   # the non-expert tensors plus every core and factor

    @property
    def expert_bytes(self) -> int:
        return sum(t.original_bytes for t in self.tensors)

    @property
    def compressed_expert_bytes(self) -> int:
        return sum(t.compressed_bytes for t in self.tensors)

    def lines(self) -> list[str]:
        width = max(len(t.name) for t in self.tensors)
        out = [f"wrote {self.path} (dense reconstruction) and {self.path / SIDECAR} (Tucker core + factors)",
               f"  {'tensor':<{width}}  {'shape':>16}  {'ranks':>16}  {'original':>11}  {'compressed':>11}"
               f"  {'ratio':>6}  {'rel. error':>10}"]
        for t in self.tensors:
            out.append(f"  {t.name:<{width}}  {_dims(t.shape):>16}  {_dims(t.ranks):>16}  {t.original_bytes:>11,}"
                       f"  {t.compressed_bytes:>11,}  {t.compressed_bytes / t.original_bytes:>6.3f}"
                       f"  {t.relative_error:>10.3e}")
        out += [f"  experts  {self.expert_bytes:,} -> {self.compressed_expert_bytes:,} bytes "
                f"({self.compressed_expert_bytes / self.expert_bytes:.3f})",
                f"  model    {self.model_bytes:,} -> {self.compressed_model_bytes:,} bytes "
                f"({self.compressed_model_bytes / self.model_bytes:.3f}) stored as core + factors"]
        return out


def _dims(values: tuple[int, ...]) -> str:
    return "x".join(map(str, values))


def parse_ranks(specs: list[str]) -> dict[str, tucker.Ranks]:
    """``["4,96,32"]`` (every expert tensor) or ``["gate_up_proj=4,96,32", "down_proj=4,32,48"]``."""
    out: dict[str, tucker.Ranks] = {}
    for spec in specs:
        kind, _, triple = spec.rpartition("=")
        kind = kind or ALL
        if kind not in (ALL, *KINDS):
            raise KodaError(f"--ranks {spec!r}: {kind!r} is not one of {', '.join(KINDS)}")
        try:
            ranks = tuple(int(v) for v in triple.split(","))
        except ValueError:
            raise KodaError(f"--ranks {spec!r}: expected three integers E,R1,R2") from None
        if len(ranks) != 3:
            raise KodaError(f"--ranks {spec!r}: expected three ranks E,R1,R2, got {len(ranks)}")
        if kind in out:
            raise KodaError(f"--ranks: {kind if kind != ALL else 'the default'} ranks given twice")
        out[kind] = ranks
    return out


def plan_ranks(shapes: dict[str, tuple[int, ...]], ranks: dict[str, tuple[int, ...]] | None,
               ratio: float | None) -> dict[str, tucker.Ranks]:
    """Expert tensor name -> checked ranks, from per-kind ranks or a target size ratio."""
    if (ranks is None) == (ratio is None):
        raise KodaError("give exactly one of --ranks and --ratio")
    plan = {}
    for name, shape in shapes.items():
        where = f"{name} {_dims(shape)}"
        if ratio is not None:
            plan[name] = tucker.ranks_for_ratio(shape, ratio, where)
            continue
        kind = EXPERT_TENSOR.fullmatch(name).group(1)
        chosen = ranks.get(kind, ranks.get(ALL))
        if chosen is None:
            raise KodaError(f"--ranks: no ranks for {kind} (give E,R1,R2 for every tensor or {kind}=E,R1,R2)")
        plan[name] = tucker.check_ranks(shape, chosen, where)
    return plan


def compress_model_dir(source: str | Path, output: str | Path, *, ranks: dict[str, tuple[int, ...]] | None = None,
                       ratio: float | None = None, iterations: int = tucker.ITERATIONS,
                       log=print) -> CompressSummary:
    """Write `output`: `source` with its expert tensors replaced by Tucker reconstructions,
    plus the factors in ``tucker.safetensors``. Ranks are checked before any work."""
    source, output = Path(source), Path(output)
    info = read_config(source)
    if info.layout != "koda":
        raise KodaError(f"{source}: a {info.layout} export; koda compress reads KODA-layout directories "
                        "(koda convert --format koda)")
    if output.exists():
        raise KodaError(f"output {output} already exists (remove it or choose another --output)")
    if iterations < 1:
        raise KodaError(f"--iterations {iterations} must be at least 1")
    state = read_sharded(source)
    with torch.device("meta"):
        expected = {n: tuple(p.shape) for n, p in KodaForCausalLM(info.model).state_dict().items()}
    check_state(state, expected, f"standalone model {source}")
    experts = {n: tuple(t.shape) for n, t in state.items() if EXPERT_TENSOR.fullmatch(n)}
    if not experts:
        raise KodaError(f"{source}: no MoE expert tensors (experts.gate_up_proj / experts.down_proj) to compress")
    plan = plan_ranks(experts, ranks, ratio)

    dense = dict(state)
    sidecar: dict[str, torch.Tensor] = {}
    reports = []
    for name, chosen in plan.items():
        weight = state[name]
        parts = tucker.decompose(weight, chosen, iterations).to(info.dtype)
        approx = tucker.reconstruct(parts).to(info.dtype)             # [n0, n1, n2], as written
        dense[name] = approx
        sidecar[f"{name}.core"] = parts.core
        for mode, factor in enumerate(parts.factors):
            sidecar[f"{name}.factor{mode}"] = factor
        reports.append(TensorReport(name, experts[name], parts.ranks, weight.numel() * weight.element_size(),
                                    parts.nbytes, tucker.relative_error(weight, approx)))
        log(f"  {name}: ranks {_dims(parts.ranks)}, relative error {reports[-1].relative_error:.3e}")

    model_bytes = sum(t.numel() * t.element_size() for t in state.values())
    compressed = model_bytes - sum(r.original_bytes for r in reports) + sum(r.compressed_bytes for r in reports)
    record = {"file": SIDECAR, "method": "tucker-hooi", "init": "svd", "iterations": iterations,
              "tensors": {r.name: {"shape": list(r.shape), "ranks": list(r.ranks), "original_bytes": r.original_bytes,
                                   "compressed_bytes": r.compressed_bytes, "relative_error": r.relative_error}
                          for r in reports},
              "model_bytes": model_bytes, "compressed_model_bytes": compressed}

    def write_sidecar(directory: Path) -> None:
        save_file(sidecar, str(directory / SIDECAR), metadata={"format": "pt", "koda_tucker": json.dumps(record)})

    tokenizer = info.tokenizer if info.tokenizer is not None and info.tokenizer.is_file() else None
    write_model_dir(output, info.model, {n: tuple(t.shape) for n, t in state.items()}, dense.__getitem__,
                    dtype=info.dtype, tokenizer=tokenizer,
                    source={"compressed_from": str(source.resolve()), "original": info.source,
                            "tucker": {k: v for k, v in record.items() if k != "tensors"}},
                    extra=write_sidecar)
    return CompressSummary(output, info.dtype, reports, model_bytes, compressed)


def read_sidecar(directory: str | Path) -> tuple[dict[str, tucker.TuckerFactors], dict]:
    """The Tucker parts of a compressed directory (tensor name -> parts) and its record."""
    path = Path(directory) / SIDECAR
    if not path.is_file():
        raise KodaError(f"{directory}: no {SIDECAR} (not written by koda compress)")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if "koda_tucker" not in meta:
            raise KodaError(f"{path}: no koda_tucker record (not written by koda compress)")
        record = json.loads(meta["koda_tucker"])
        parts = {name: tucker.TuckerFactors(handle.get_tensor(f"{name}.core"),
                                            tuple(handle.get_tensor(f"{name}.factor{m}") for m in range(3)))
                 for name in record["tensors"]}
    return parts, record
