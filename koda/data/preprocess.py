"""Text -> token shards with a deterministic train/validation split.

Each document goes to validation when a hash of its text falls under `val_fraction`, so the
split does not depend on file order and a document never moves between splits when the
corpus grows. Documents are separated by EOS.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from koda.data.shards import write_shard
from koda.data.tokenizer import EOS, Tokenizer

MANIFEST = "manifest.json"


def is_validation(text: str, val_fraction: float) -> bool:
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


@dataclass
class _SplitWriter:
    """Buffers one split's tokens and rolls over to a new shard every `shard_tokens`."""

    directory: Path
    split: str
    tokenizer: Tokenizer
    shard_tokens: int
    chunks: list[np.ndarray] = field(default_factory=list)
    buffered: int = 0
    shards: list[dict] = field(default_factory=list)

    def add(self, ids: list[int]) -> None:
        self.chunks.append(np.asarray(ids + [EOS], dtype=np.int64))
        self.buffered += len(ids) + 1
        if self.buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.chunks:
            return
        tokens = np.concatenate(self.chunks)
        ends = np.cumsum([len(c) for c in self.chunks])
        stem = self.directory / f"{self.split}_{len(self.shards):05d}"
        header = write_shard(stem, tokens, ends, self.tokenizer.fingerprint, self.tokenizer.vocab_size)
        self.shards.append({"name": stem.name, "tokens": header.n_tokens, "docs": header.n_docs})
        self.chunks, self.buffered = [], 0


def preprocess(documents: Iterable[str], tokenizer: Tokenizer, out_dir: str | Path, val_fraction: float,
               shard_tokens: int = 50_000_000, batch_docs: int = 256) -> dict:
    """Tokenize `documents` into `out_dir/{train,val}_NNNNN.{bin,idx}` and write the manifest
    last (atomically): a directory with a manifest is complete."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    writers = {s: _SplitWriter(out, s, tokenizer, shard_tokens) for s in ("train", "val")}
    batch: list[str] = []

    def drain() -> None:
        for text, ids in zip(batch, tokenizer.encode_batch(batch), strict=True):
            writers["val" if is_validation(text, val_fraction) else "train"].add(ids)
        batch.clear()

    for doc in documents:
        batch.append(doc)
        if len(batch) >= batch_docs:
            drain()
    drain()
    for writer in writers.values():
        writer.flush()
    manifest = {"tokenizer": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
                "val_fraction": val_fraction, "splits": {s: w.shards for s, w in writers.items()}}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


def read_manifest(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
