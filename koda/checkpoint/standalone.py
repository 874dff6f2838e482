"""The standalone model directory: what ``koda convert`` writes and inference loads.

Layout::

    config.json                     {"format": "koda-standalone", "format_version": 1, "model": {...},
                                     "dtype": ..., "tokenizer": "tokenizer.model", "source": {...}}
    model.safetensors               KODA's own parameter names (``KodaForCausalLM.state_dict()``),
      or model-0000i-of-0000n.safetensors + model.safetensors.index.json past the shard limit
    tokenizer.model                 the run's sentencepiece model, copied

Loading needs neither DeepSpeed nor a GPU. ``load_standalone`` also accepts a directory
written with ``--format hf-mixtral`` (``"model_type": "mixtral"`` in its config), mapping
the names back, so one loader serves both exports. The model is built on the meta device
and the tensors are assigned, so loading costs no random initialisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from koda import naming
from koda.checkpoint import hf_mixtral
from koda.checkpoint.safetensors_io import read_sharded
from koda.errors import ConfigError, KodaError
from koda.model import KodaForCausalLM, ModelConfig

FORMAT = "koda-standalone"
FORMAT_VERSION = 1
TOKENIZER = "tokenizer.model"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class StandaloneConfig:
    model: ModelConfig
    dtype: torch.dtype                 # the dtype the tensors are stored in
    tokenizer: Path | None             # absolute path of the copied tokenizer, when there is one
    layout: str                        # "koda" or "hf-mixtral"
    source: dict                       # where it came from (checkpoint, tag, step), informational


def config_json(model: ModelConfig, dtype: torch.dtype, tokenizer: str | None, source: dict) -> dict:
    from koda import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "koda_version": __version__,
            "model": model.to_dict(), "dtype": hf_mixtral.DTYPE_NAMES[dtype], "tokenizer": tokenizer,
            "source": source}


def read_config(path: str | Path) -> StandaloneConfig:
    """Parse and check ``config.json`` of a standalone (or hf-mixtral) directory."""
    path = Path(path)
    config_path = path / "config.json"
    try:
        raw = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise KodaError(f"standalone model {path}: no config.json (not a converted model directory)") from None
    except ValueError:
        raise KodaError(f"standalone model {path}: config.json is not valid JSON") from None
    tokenizer = path / TOKENIZER
    if raw.get("model_type") == "mixtral":
        dtype = DTYPES.get(raw.get("dtype", raw.get("torch_dtype", "float32")), torch.float32)
        return StandaloneConfig(hf_mixtral.model_config_from_hf(raw), dtype,
                                tokenizer if tokenizer.is_file() else None, "hf-mixtral", {})
    if raw.get("format") != FORMAT:
        raise KodaError(f"standalone model {path}: config.json is not a KODA standalone config "
                        f"(format {raw.get('format')!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise KodaError(f"standalone model {path}: format version {raw.get('format_version')!r} "
                        f"(written by KODA {raw.get('koda_version', '?')}); this KODA reads version {FORMAT_VERSION}")
    try:
        model = ModelConfig.from_dict(raw["model"])
    except ConfigError as err:
        raise KodaError(f"standalone model {path}: config.json {err}") from None
    if raw.get("dtype") not in DTYPES:
        raise KodaError(f"standalone model {path}: unknown dtype {raw.get('dtype')!r} in config.json")
    tok = raw.get("tokenizer")
    return StandaloneConfig(model, DTYPES[raw["dtype"]], (path / tok) if tok else None, "koda", raw.get("source", {}))


def load_standalone(path: str | Path, dtype: torch.dtype | None = None) -> KodaForCausalLM:
    """The model of a converted directory in eval mode, in `dtype` (default: as stored).

    Every name and shape is checked against the model the config describes; a mismatch is
    one KodaError line naming the first offending tensor.
    """
    path = Path(path)
    info = read_config(path)
    state = read_sharded(path)
    if info.layout == "hf-mixtral":
        state = naming.koda_state_from_hf(state, info.model.n_experts, info.model.n_layers)
    with torch.device("meta"):
        model = KodaForCausalLM(info.model)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    check_state(state, expected, f"standalone model {path}")
    target = dtype or info.dtype
    model.load_state_dict({k: v.to(target) for k, v in state.items()}, assign=True)
    return model.eval()


def check_state(state: dict[str, torch.Tensor], expected: dict[str, tuple], where: str) -> None:
    missing = sorted(set(expected) - set(state))
    if missing:
        raise KodaError(f"{where}: tensor {missing[0]} is missing ({len(missing)} missing; "
                        "weights of another model or an incomplete file)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise KodaError(f"{where}: unexpected tensor {extra[0]} (weights of another model?)")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise KodaError(f"{where}: {name} has shape {tuple(state[name].shape)}, the config says {shape}")
