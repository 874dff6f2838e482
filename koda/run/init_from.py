"""``koda train --init-from``: start a run from another run's weights, with a fresh optimizer,
schedule, step counter and data order (fine-tuning; the CE-only baseline on the task set).

The source is a converted directory (``koda convert``'s standalone or hf-mixtral output) or
a training checkpoint (a run directory, its ``checkpoints/``, or one tag) of any world size
and expert-parallel size: ``koda.checkpoint`` reads the ZeRO-3 partitions in place and
reassembles full KODA-named tensors. Every rank reads the full source, and the weights are
copied in one module at a time while the network is built partitioned (``zero.Init``; see
``koda.model.init.load_weights``), the path the seeded random weights take, so AutoEP's expert
sharding and ZeRO-3's partitioning see exactly these values. Reading the whole source on every
rank is fine up to ``small``; ``large`` would want each rank to read only its share.
"""

from __future__ import annotations

from pathlib import Path

import torch

from koda.errors import KodaError
from koda.model.config import ModelConfig


def _kind(path: Path) -> str:
    from koda.checkpoint.record import is_training_checkpoint
    from koda.infer.loading import is_standalone

    if not path.is_dir():
        raise KodaError(f"--init-from {path}: no such directory")
    if is_standalone(path):
        return "standalone"
    if is_training_checkpoint(path):
        return "checkpoint"
    raise KodaError(f"--init-from {path}: neither a converted model (config.json + model.safetensors) nor a "
                    "training run or checkpoint (checkpoints/, latest, or a complete tag)")


def _same_model(found: ModelConfig, wanted: ModelConfig, path: Path) -> None:
    a, b = found.to_dict(), wanted.to_dict()
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
        k = diff[0]
        raise KodaError(f"--init-from {path}: model.{k} is {a.get(k)!r} there, {b.get(k)!r} in this run's config")


def check_source(path: str | Path, model: ModelConfig) -> str:
    """Cheap checks before any rank starts (the source exists, its model is this run's); -> its kind."""
    path = Path(path)
    kind = _kind(path)
    if kind == "standalone":
        from koda.checkpoint import read_config

        _same_model(read_config(path).model, model, path)
    else:
        from koda.checkpoint.convert import open_checkpoint

        _same_model(open_checkpoint(path).model, model, path)
    return kind


def initial_state(path: str | Path, model: ModelConfig) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of the source, KODA names, checked against ``model``."""
    path = Path(path)
    if _kind(path) == "standalone":
        from koda.checkpoint import load_standalone

        source = load_standalone(path, torch.float32)
    else:
        from koda.checkpoint import load_from_checkpoint

        source = load_from_checkpoint(path)
    _same_model(source.cfg, model, path)
    return source.state_dict()
