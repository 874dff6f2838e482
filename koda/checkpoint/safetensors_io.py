"""Sharded safetensors files: one ``model.safetensors``, or numbered shards plus an index.

The layout is Hugging Face's (``model-00001-of-00003.safetensors`` and a
``model.safetensors.index.json`` holding ``total_size`` and a name -> file ``weight_map``),
so both KODA's standalone directory and the ``hf-mixtral`` export are read by any tool that
reads that layout. Shards are planned from shapes alone and each is materialised only while
it is written: a converter can hand in tensors produced on demand (memory-mapped checkpoint
fragments), and peak memory stays at about one shard rather than the whole model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from koda.errors import KodaError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """'2GB' (10^9), '500MiB' (2^20), or a plain byte count -> bytes."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
        if not match or match.group(2).upper() not in _UNITS:
            raise KodaError(f"size {text!r}: expected a number with an optional unit (KB, MB, GB, MiB, GiB)")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise KodaError(f"size {text!r} must be at least 1 byte")
    return value


def plan_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
    """Greedy packing in the given order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[str]] = []
    used = math.inf
    for name, size in sizes.items():
        if used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def write_sharded(directory: Path, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
                  produce: Callable[[str], torch.Tensor], max_bytes: int,
                  metadata: dict[str, str] | None = None) -> list[Path]:
    """Write every tensor named in `shapes` (name -> (shape, dtype), in file order) into
    `directory`, asking `produce(name)` for each tensor only when its shard is written.
    Returns the files written (the index last, when there is one)."""
    sizes = {name: math.prod(shape) * dtype.itemsize for name, (shape, dtype) in shapes.items()}
    shards = plan_shards(sizes, max_bytes)
    meta = {"format": "pt", **(metadata or {})}
    names = [SINGLE] if len(shards) == 1 else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                                               for i in range(len(shards))]
    written = []
    for file_name, members in zip(names, shards, strict=True):
        tensors = {}
        for name in members:
            tensor = produce(name).contiguous()
            if tuple(tensor.shape) != tuple(shapes[name][0]) or tensor.dtype != shapes[name][1]:
                raise KodaError(f"tensor {name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                                f"planned {tuple(shapes[name][0])} {shapes[name][1]}")
            tensors[name] = tensor
        save_file(tensors, str(directory / file_name), metadata=meta)
        written.append(directory / file_name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())},
                 "weight_map": {name: file_name for file_name, members in zip(names, shards, strict=True)
                                for name in members}}
        (directory / INDEX).write_text(json.dumps(index, indent=1))
        written.append(directory / INDEX)
    return written


def weight_files(directory: Path) -> dict[str, list[str]]:
    """file name -> tensor names it should hold, from the index or the single file."""
    index_path = directory / INDEX
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise KodaError(f"{index_path}: not a valid safetensors index") from None
        files: dict[str, list[str]] = {}
        for name, file_name in weight_map.items():
            files.setdefault(file_name, []).append(name)
        return files
    if (directory / SINGLE).is_file():
        return {SINGLE: []}
    raise KodaError(f"{directory}: no {SINGLE} and no {INDEX}")


def read_sharded(directory: Path, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a (possibly sharded) safetensors model directory, checking that each
    shard holds exactly what the index says it holds."""
    directory = Path(directory)
    wanted = set(names) if names is not None else None
    out: dict[str, torch.Tensor] = {}
    for file_name, listed in weight_files(directory).items():
        path = directory / file_name
        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = list(handle.keys())
                if listed and sorted(keys) != sorted(listed):
                    raise KodaError(f"{path}: holds {len(keys)} tensors, the index lists {len(listed)}")
                for key in keys:
                    if wanted is None or key in wanted:
                        out[key] = handle.get_tensor(key)
        except FileNotFoundError:
            raise KodaError(f"{path}: missing (listed in {INDEX})") from None
        except (SafetensorError, OSError) as err:
            raise KodaError(f"{path}: unreadable safetensors file ({' '.join(str(err).split())[:120]})") from None
    return out
