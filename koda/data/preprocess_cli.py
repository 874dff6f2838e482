"""``koda preprocess``: tokenize text/.py/.jsonl/.parquet files and saved datasets into train/val token shards."""

from __future__ import annotations

import argparse
import time

from koda.data.corpus import iter_documents, resolve_sources
from koda.data.preprocess import preprocess
from koda.data.tokenizer import Tokenizer


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="koda preprocess", description=__doc__)
    p.add_argument("--sources", nargs="+", default=["stdlib"],
                   help="'stdlib', files or globs (.py, .txt, .jsonl, .parquet) or datasets save_to_disk directories")
    p.add_argument("--text-column", default="text", help="the document's field in .jsonl, Parquet and saved datasets")
    p.add_argument("--tokenizer", required=True, help="a .model file from 'koda tokenizer'")
    p.add_argument("--output", required=True, help="directory for {train,val}_NNNNN.{bin,idx}")
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--max-mb", type=float, help="stop after this much text")
    p.add_argument("--shard-tokens", type=int, default=50_000_000, help="tokens per shard file")
    args = p.parse_args(argv)
    start = time.perf_counter()
    tokenizer = Tokenizer(args.tokenizer)
    max_bytes = int(args.max_mb * (1 << 20)) if args.max_mb else None
    documents = iter_documents(resolve_sources(args.sources), max_bytes, args.text_column)
    manifest = preprocess(documents, tokenizer, args.output, args.val_fraction, args.shard_tokens)
    for split, shards in manifest["splits"].items():
        print(f"{split}: {len(shards)} shard(s), {sum(s['docs'] for s in shards):,} documents, "
              f"{sum(s['tokens'] for s in shards):,} tokens")
    print(f"wrote {args.output} in {time.perf_counter() - start:.1f}s")
    return 0
