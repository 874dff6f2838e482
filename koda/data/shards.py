"""Token shards: a flat ``.bin`` of token ids and an ``.idx`` describing it (gpt-neox style).

``.idx`` layout: 8-byte magic ``KODAIDX1``, 8-byte little-endian header length, a JSON header
(dtype, token and document counts, tokenizer fingerprint, blake2b of the .bin), then the
int64 end offset of every document. Both files are written under temporary names and
renamed, ``.bin`` first and ``.idx`` last, so a shard whose ``.idx`` exists is complete:
a preprocessing run killed half way leaves nothing that a trainer would mistake for data.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koda.errors import KodaError

MAGIC = b"KODAIDX1"
VERSION = 1


@dataclass(frozen=True)
class ShardHeader:
    dtype: str
    n_tokens: int
    n_docs: int
    tokenizer: str       # fingerprint of the tokenizer that produced the ids
    vocab_size: int
    bin_blake2b: str
    version: int = VERSION


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def write_shard(path_stem: Path, tokens: np.ndarray, doc_ends: np.ndarray, tokenizer: str,
                vocab_size: int) -> ShardHeader:
    """tokens: [N] ids of all documents back to back; doc_ends: [n_docs] int64 end offsets."""
    dtype = token_dtype(vocab_size)
    data = np.ascontiguousarray(tokens, dtype=dtype)
    header = ShardHeader(dtype.name, int(data.size), int(doc_ends.size), tokenizer, vocab_size,
                         hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest())
    bin_path, idx_path = path_stem.with_suffix(".bin"), path_stem.with_suffix(".idx")
    _atomic_write(bin_path, data.tobytes())
    meta = json.dumps(header.__dict__).encode()
    _atomic_write(idx_path, MAGIC + struct.pack("<Q", len(meta)) + meta
                  + np.ascontiguousarray(doc_ends, dtype=np.int64).tobytes())
    return header


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class Shard:
    """A read-only memory map of one ``.bin`` checked against its ``.idx``."""

    def __init__(self, idx_path: Path, verify_hash: bool = False):
        self.idx_path, self.bin_path = Path(idx_path), Path(idx_path).with_suffix(".bin")
        self.header, self.doc_ends = _read_idx(self.idx_path)
        itemsize = np.dtype(self.header.dtype).itemsize
        try:
            size = self.bin_path.stat().st_size
        except FileNotFoundError:
            raise KodaError(f"shard {self.bin_path}: missing (its .idx exists)") from None
        if size != self.header.n_tokens * itemsize:
            raise KodaError(f"shard {self.bin_path}: {size} bytes, expected "
                            f"{self.header.n_tokens * itemsize} from its .idx (truncated or corrupt)")
        self.tokens = np.memmap(self.bin_path, dtype=self.header.dtype, mode="r") if size else \
            np.zeros(0, dtype=self.header.dtype)
        if verify_hash:
            digest = hashlib.blake2b(np.asarray(self.tokens).tobytes(), digest_size=16).hexdigest()
            if digest != self.header.bin_blake2b:
                raise KodaError(f"shard {self.bin_path}: content hash mismatch (corrupt)")

    def __len__(self) -> int:
        return self.header.n_tokens


def _read_idx(path: Path) -> tuple[ShardHeader, np.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise KodaError(f"shard index {path}: cannot read ({err.strerror})") from None
    if raw[:8] != MAGIC or len(raw) < 16:
        raise KodaError(f"shard index {path}: not a KODA shard index (bad magic)")
    (length,) = struct.unpack("<Q", raw[8:16])
    try:
        fields = json.loads(raw[16:16 + length])
        header = ShardHeader(**fields)
    except (ValueError, TypeError):
        raise KodaError(f"shard index {path}: corrupt header") from None
    if header.version != VERSION:
        raise KodaError(f"shard index {path}: format version {header.version}, this KODA reads {VERSION}")
    ends = np.frombuffer(raw[16 + length:], dtype=np.int64)
    if ends.size != header.n_docs or (ends.size and (ends[-1] != header.n_tokens or np.any(np.diff(ends) < 0))):
        raise KodaError(f"shard index {path}: document offsets disagree with the header (corrupt)")
    return header, ends


def split_paths(directory: str | Path, split: str) -> list[Path]:
    """The ``.idx`` files of one split (``train_00000.idx``, ...), in shard order."""
    return sorted(Path(directory).glob(f"{split}_*.idx"))


def open_split(directory: Path, split: str, tokenizer: str | None = None, vocab_size: int | None = None,
               verify_hash: bool = False) -> list[Shard]:
    """All shards of `split` in `directory`, checked to come from the expected tokenizer."""
    paths = split_paths(directory, split)
    if not paths:
        raise KodaError(f"data: no {split} shards in {directory} (run 'koda preprocess' or delete it to rebuild)")
    shards = [Shard(p, verify_hash) for p in paths]
    for shard in shards:
        if tokenizer is not None and shard.header.tokenizer != tokenizer:
            raise KodaError(f"shard {shard.idx_path}: made with tokenizer {shard.header.tokenizer}, "
                            f"but the configured tokenizer is {tokenizer}")
        if vocab_size is not None and shard.header.vocab_size > vocab_size:
            raise KodaError(f"shard {shard.idx_path}: vocabulary {shard.header.vocab_size} exceeds "
                            f"model.vocab_size {vocab_size}")
    return shards
