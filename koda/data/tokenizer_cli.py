"""``koda tokenizer``: train a code tokenizer on files (default: the standard library)."""

from __future__ import annotations

import argparse
import time

from koda.data.corpus import iter_documents, resolve_sources
from koda.data.tokenizer import Tokenizer, train_tokenizer


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="koda tokenizer", description=__doc__)
    p.add_argument("--sources", nargs="+", default=["stdlib"],
                   help="'stdlib', files or globs (.py, .txt, .jsonl, .parquet) or datasets save_to_disk directories")
    p.add_argument("--text-column", default="text", help="the document's field in .jsonl, Parquet and saved datasets")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--corpus-mb", type=float, default=8.0, help="train on this much text")
    p.add_argument("--output", required=True, help="path of the .model file to write")
    args = p.parse_args(argv)
    start = time.perf_counter()
    files = resolve_sources(args.sources)
    documents = iter_documents(files, int(args.corpus_mb * (1 << 20)), args.text_column)
    path = train_tokenizer(documents, args.output, args.vocab_size)
    tok = Tokenizer(path)
    sample = "def add(a, b):\n    return a + b\n"
    print(f"wrote {path}: vocab {tok.vocab_size}, fingerprint {tok.fingerprint}, "
          f"{time.perf_counter() - start:.1f}s; {len(sample)} chars of code -> {len(tok.encode(sample))} tokens")
    return 0
