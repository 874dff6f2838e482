"""Find and load the model to sample from: a standalone model directory or a training run.

A standalone directory (``koda convert``'s output: ``config.json`` + ``model.safetensors``,
or shards with an index) loads without DeepSpeed. A run directory (``<run>/checkpoints``
with ZeRO-3 shards) goes through the very conversion ``koda convert`` runs, into a private
temporary directory that is deleted once the model is in memory, so sampling from a
checkpoint and from its converted copy give the same model.

Both functions live in ``koda.checkpoint`` (the ``koda convert`` package). Where it is not
installed, a standalone directory is still read here directly (config.json's ``model``
section, weights in KODA's own names via ``safetensors``), and a run directory is refused
with a one-line error.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from koda.data.tokenizer import Tokenizer
from koda.errors import KodaError
from koda.model.config import ModelConfig
from koda.model.transformer import KodaForCausalLM

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass
class LoadedModel:
    model: KodaForCausalLM
    tokenizer: Tokenizer | None   # the tokenizer stored beside the weights, if any
    source: str                   # "standalone" or "checkpoint"


def is_standalone(path: Path) -> bool:
    return (path / "config.json").is_file() and ((path / WEIGHTS).is_file() or (path / WEIGHTS_INDEX).is_file())


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / "latest").is_file()


def _read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except ValueError as err:
        raise KodaError(f"{path / 'config.json'}: not valid JSON ({err})") from None


def _tokenizer_path(path: Path, config: dict) -> Path | None:
    """The tokenizer named in config.json (relative to the directory), else tokenizer.model."""
    named = config.get("tokenizer")
    if isinstance(named, dict):
        named = named.get("path") or named.get("file")
    for candidate in ([path / Path(named).name, Path(named)] if isinstance(named, str) else []) + [
            path / "tokenizer.model"]:
        if candidate.is_file():
            return candidate
    return None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (path / WEIGHTS).is_file():
        files = [path / WEIGHTS]
    else:
        index = json.loads((path / WEIGHTS_INDEX).read_text())
        files = [path / name for name in sorted(set(index["weight_map"].values()))]
    state = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as err:
            raise KodaError(f"{file}: cannot read weights ({err})") from None
    return state


def _load_standalone_here(path: Path) -> KodaForCausalLM:
    config = _read_config(path)
    if not isinstance(config.get("model"), dict):
        raise KodaError(f"{path / 'config.json'}: no 'model' section")
    model = KodaForCausalLM(ModelConfig.from_dict(config["model"]))
    missing, unexpected = model.load_state_dict(_read_weights(path), strict=False)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise KodaError(f"{path}: weights do not match the model in config.json ({what})")
    return model


def _cast(model: KodaForCausalLM, dtype: str | None, device: str) -> KodaForCausalLM:
    if dtype is not None and dtype not in DTYPES:
        raise KodaError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model = model.to(device=device, dtype=DTYPES[dtype] if dtype else None)
    return model.eval().requires_grad_(False)


def _load_dir(path: Path) -> tuple[KodaForCausalLM, Tokenizer | None]:
    try:
        from koda.checkpoint import load_standalone
    except ImportError:
        model = _load_standalone_here(path)
    else:
        model = load_standalone(path)
    tokenizer = _tokenizer_path(path, _read_config(path))
    return model, Tokenizer(tokenizer) if tokenizer else None


def load_model(path: str | Path, dtype: str | None = None, device: str = "cpu", tag: str | None = None,
               tokenizer: str | None = None) -> LoadedModel:
    """A standalone model directory or a run directory -> the model in eval mode on `device`.

    dtype: "fp32" / "bf16" casts the weights (None keeps the stored dtype); tag: which
    checkpoint of a run (default: the one ``latest`` names); tokenizer: the run's tokenizer
    where its run config does not lead to it.
    """
    path = Path(path)
    if not path.is_dir():
        raise KodaError(f"--model {path}: no such directory")
    if is_standalone(path):
        model, tokenizer = _load_dir(path)
        return LoadedModel(_cast(model, dtype, device), tokenizer, "standalone")
    if is_run_dir(path):
        try:
            from koda.checkpoint import convert_checkpoint
        except ImportError:
            raise KodaError(f"--model {path} is a training run, and this build has no checkpoint conversion "
                            "(koda.checkpoint); convert it with 'koda convert' and pass the output") from None
        with tempfile.TemporaryDirectory(prefix="koda-generate-") as scratch:
            convert_checkpoint(path, Path(scratch) / "model", tag=tag, dtype="fp32", tokenizer=tokenizer)
            model, tokenizer = _load_dir(Path(scratch) / "model")
        return LoadedModel(_cast(model, dtype, device), tokenizer, "checkpoint")
    raise KodaError(f"--model {path}: neither a standalone model (config.json + {WEIGHTS}) nor a run "
                    "directory (checkpoints/)")
