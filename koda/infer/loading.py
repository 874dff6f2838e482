"""Find and load the model to sample from: a standalone model directory or a training run.

A standalone directory (``koda convert``'s output: ``config.json`` + ``model.safetensors``,
or shards with an index; also its ``hf-mixtral`` export) loads through
``koda.checkpoint.load_standalone``, without DeepSpeed. A training run (its directory, its
``checkpoints/`` directory, or one tag directory) loads through
``koda.checkpoint.load_from_checkpoint``: the reading and checks of ``koda convert``,
done in this process with nothing written, so sampling from a checkpoint and from its
converted copy give the same model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from koda.checkpoint import load_from_checkpoint, load_standalone, read_config
from koda.checkpoint.record import is_training_checkpoint, run_dir_of
from koda.data.tokenizer import Tokenizer
from koda.errors import KodaError
from koda.model.transformer import KodaForCausalLM
from koda.run_layout import RunLayout

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


@dataclass
class LoadedModel:
    model: KodaForCausalLM
    tokenizer: Tokenizer | None   # the tokenizer stored beside the weights or named by the run, if found
    source: str                   # "standalone" or "checkpoint"


def is_standalone(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / name).is_file() for name in WEIGHTS)


def _run_tokenizer(path: Path) -> Path | None:
    """The tokenizer the run config names, resolved as ``koda convert`` does: an absolute
    path, else relative to the working directory, else to the run directory."""
    run_dir = run_dir_of(path)
    try:
        given = json.loads(RunLayout(run_dir).config.read_text())["data"]["tokenizer"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return next((c for c in RunLayout(run_dir).tokenizer_candidates(given) if c.is_file()), None)


def load_model(path: str | Path, dtype: str | None = None, device: str = "cpu", tag: str | None = None,
               tokenizer: str | None = None) -> LoadedModel:
    """A standalone model directory or a training run -> the model in eval mode on `device`.

    dtype: "fp32" / "bf16" casts the weights (None keeps the stored dtype; a checkpoint is
    read in fp32); tag: which checkpoint of a run (default: the one ``latest`` names);
    tokenizer: overrides the one found beside the weights or named by the run config.
    """
    if dtype is not None and dtype not in DTYPES:
        raise KodaError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = Path(path)
    if not path.is_dir():
        raise KodaError(f"--model {path}: no such directory")
    if is_standalone(path):
        model, source = load_standalone(path), "standalone"
        found = read_config(path).tokenizer
    elif is_training_checkpoint(path):
        model, source = load_from_checkpoint(path, tag), "checkpoint"
        found = _run_tokenizer(path)
    else:
        raise KodaError(f"--model {path}: neither a standalone model (config.json + {WEIGHTS[0]}) nor a "
                        "training run (checkpoints/)")
    chosen = Path(tokenizer) if tokenizer else found if found is not None and found.is_file() else None
    model = model.to(device=device, dtype=DTYPES[dtype] if dtype else None).eval().requires_grad_(False)
    return LoadedModel(model, Tokenizer(chosen) if chosen else None, source)
