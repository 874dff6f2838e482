"""Build the tokenizer and token shards a run needs, once, and reuse them afterwards.

The first run on a machine trains the tokenizer and writes the shards (cached under the
configured paths); later runs only check them. A file lock serialises concurrent callers
(two runs started at once, or every rank of a launch), so the work is done once.
"""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from pathlib import Path

from koda.data.corpus import iter_documents, resolve_sources
from koda.data.preprocess import preprocess, read_manifest
from koda.data.shards import open_split, split_paths
from koda.data.tokenizer import Tokenizer, train_tokenizer
from koda.errors import KodaError

MB = 1 << 20


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(data, vocab_size: int, build_missing: bool = True, log=print) -> Tokenizer:
    """Ensure `data.tokenizer` and `data.shards_dir` exist and agree; return the tokenizer.

    data: a ``DataConfig``. A missing tokenizer or shard set is built when `build_missing`;
    a present but corrupt one is an error naming the file (it may be someone's data).
    """
    tok_path, shards_dir = Path(data.tokenizer), Path(data.shards_dir)
    with _locked(shards_dir.parent / f".{shards_dir.name}.lock"):
        if not tok_path.exists():
            if not build_missing:
                raise KodaError(f"data.tokenizer: {tok_path} does not exist")
            start = time.perf_counter()
            files = resolve_sources(list(data.sources))
            train_tokenizer(iter_documents(files, int(data.tokenizer_corpus_mb * MB), data.text_column), tok_path,
                            vocab_size)
            log(f"trained tokenizer {tok_path} (vocab {vocab_size}) in {time.perf_counter() - start:.1f}s")
        tokenizer = Tokenizer(tok_path)
        if tokenizer.vocab_size != vocab_size:
            raise KodaError(f"data.tokenizer {tok_path}: vocabulary {tokenizer.vocab_size} != model.vocab_size "
                            f"{vocab_size}")
        manifest = read_manifest(shards_dir)
        if manifest is None or manifest["tokenizer"] != tokenizer.fingerprint:
            if manifest is not None:
                raise KodaError(f"data.shards_dir {shards_dir}: made with another tokenizer "
                                f"({manifest['tokenizer']} != {tokenizer.fingerprint}); use another directory")
            if not build_missing:
                raise KodaError(f"data.shards_dir: {shards_dir} has no complete shard set (no manifest.json)")
            start = time.perf_counter()
            files = resolve_sources(list(data.sources))
            max_bytes = int(data.max_corpus_mb * MB) if data.max_corpus_mb else None
            manifest = preprocess(iter_documents(files, max_bytes, data.text_column), tokenizer, shards_dir,
                                  data.val_fraction)
            tokens = sum(s["tokens"] for split in manifest["splits"].values() for s in split)
            log(f"wrote {tokens:,} tokens of shards to {shards_dir} in {time.perf_counter() - start:.1f}s")
        for split in ("train", "val"):
            listed = {s["name"] for s in manifest["splits"][split]}
            present = {p.stem for p in split_paths(shards_dir, split)}
            if listed - present:
                raise KodaError(f"data.shards_dir {shards_dir}: shard {sorted(listed - present)[0]} is missing")
            open_split(shards_dir, split, tokenizer.fingerprint, vocab_size)
    return tokenizer

