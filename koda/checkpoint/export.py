"""Write a model directory (KODA standalone or hf-mixtral) all at once or not at all.

Everything goes into a sibling ``<out>.tmp-XXXXXX`` directory, which is renamed to
``<out>`` only after every file is written and flushed; a failure removes the temporary
directory, and a kill leaves only a ``.tmp-`` directory that no loader mistakes for a
model. The final ``rename`` is atomic on one filesystem, so ``<out>`` either does not
exist or is complete.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from koda import naming
from koda.checkpoint import hf_mixtral, hf_tokenizer
from koda.checkpoint.safetensors_io import parse_size, write_sharded
from koda.checkpoint.standalone import TOKENIZER, config_json
from koda.errors import KodaError
from koda.model import ModelConfig

FORMATS = ("koda", "hf-mixtral")


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    format: str
    dtype: torch.dtype
    parameters: int        # total, all experts
    active_parameters: int  # per token: top_k of n_experts experts
    experts: int           # experts per MoE layer
    moe_layers: int
    files: int             # safetensors files
    bytes: int             # size of the tensors written

    def lines(self) -> list[str]:
        return [f"wrote {self.path} ({self.format})",
                f"  parameters  {self.parameters:,} total, {self.active_parameters:,} active per token",
                f"  experts     {self.experts} per MoE layer x {self.moe_layers} layers",
                f"  dtype       {hf_mixtral.DTYPE_NAMES[self.dtype]}",
                f"  size        {self.bytes / 1e6:,.1f} MB in {self.files} safetensors file(s)"]


def _active(cfg: ModelConfig, shapes: dict[str, tuple]) -> int:
    total = 0
    for name, shape in shapes.items():
        count = int(torch.Size(shape).numel())
        if ".experts." in name:
            count = count // cfg.n_experts * cfg.top_k
        total += count
    return total


def write_model_dir(out: str | Path, cfg: ModelConfig, shapes: dict[str, tuple], get: Callable[[str], torch.Tensor],
                    *, dtype: torch.dtype, fmt: str = "koda", tokenizer: str | Path | None = None,
                    source: dict | None = None, max_shard_size: str | int = "2GB",
                    extra: Callable[[Path], None] | None = None) -> ExportSummary:
    """shapes: KODA name -> shape in file order; get(name) -> that tensor (any float dtype).

    Refuses an existing `out`; the tokenizer file, if given, is copied beside the weights
    (for hf-mixtral also as Hugging Face tokenizer files, with ``generation_config.json``).
    `extra(directory)` writes further files (``koda compress``'s Tucker factors) into the
    directory before it is published, so they appear with the model or not at all.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise KodaError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.exists():
        raise KodaError(f"output {out} already exists (remove it or choose another --output)")
    max_bytes = parse_size(max_shard_size)
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise KodaError(f"tokenizer {tokenizer}: not found")
    if fmt == "hf-mixtral":
        hf_mixtral.check_exportable(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        cast = functools.lru_cache(maxsize=1)(lambda name: get(name).to(dtype))   # HF slices one tensor E times
        if fmt == "koda":
            plan = {name: (tuple(shape), dtype) for name, shape in shapes.items()}
            files = write_sharded(tmp, plan, cast, max_bytes)
            config = config_json(cfg, dtype, TOKENIZER if tokenizer else None, source or {})
        else:
            hf = naming.hf_plan(shapes)
            plan = {name: (entry[0], dtype) for name, entry in hf.items()}
            files = write_sharded(tmp, plan, lambda name: naming.produce_hf(hf[name], cast), max_bytes)
            config = hf_mixtral.hf_config(cfg, dtype)
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / TOKENIZER)
        if fmt == "hf-mixtral":
            hf_tokenizer.write_hf_files(tmp, tokenizer, cfg.max_seq_len)
        if extra is not None:
            extra(tmp)
        _fsync_tree(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tensor_bytes = sum(int(torch.Size(s).numel()) * dtype.itemsize for s, _ in plan.values())
    return ExportSummary(out, fmt, dtype, sum(int(torch.Size(s).numel()) for s in shapes.values()),
                         _active(cfg, shapes), cfg.n_experts,
                         sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers)),
                         sum(p.suffix == ".safetensors" for p in files), tensor_bytes)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_standalone(model: torch.nn.Module, out: str | Path, *, tokenizer: str | Path | None = None,
                    dtype: torch.dtype | None = None, fmt: str = "koda",
                    max_shard_size: str | int = "2GB") -> ExportSummary:
    """A standalone directory from an in-memory ``KodaForCausalLM`` (tests, tools, fine-tunes)."""
    state = {name: t.detach() for name, t in model.state_dict().items()}
    dtype = dtype or next(iter(state.values())).dtype
    return write_model_dir(out, model.cfg, {n: tuple(t.shape) for n, t in state.items()}, state.__getitem__,
                           dtype=dtype, fmt=fmt, tokenizer=tokenizer, source={"from": "save_standalone"},
                           max_shard_size=max_shard_size)
