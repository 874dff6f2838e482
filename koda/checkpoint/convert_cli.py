"""``koda convert``: a ZeRO-3/AutoEP checkpoint to a standalone model directory.

    koda convert runs/smoke --output models/smoke                   # latest checkpoint, fp32
    koda convert runs/smoke/checkpoints --tag step00000200 --output m --dtype bf16
    koda convert runs/smoke --output m-hf --format hf-mixtral      # for transformers / vLLM

Runs in this process on the CPU: no GPU, no launcher, no ranks (docs/checkpoints.md).
"""

from __future__ import annotations

import argparse
import os


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda convert",
                                description="Convert a ZeRO-3/AutoEP checkpoint to a standalone model directory.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="a run dir, its checkpoints/ dir, or one tag dir")
    p.add_argument("--output", "-o", required=True, help="directory to create (must not exist)")
    p.add_argument("--tag", help="checkpoint tag (default: the one 'latest' names)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="stored dtype (default fp32: the exact master weights)")
    p.add_argument("--format", choices=("koda", "hf-mixtral"), default="koda",
                   help="koda: KODA names, loads with koda.checkpoint.load_standalone; "
                        "hf-mixtral: a MixtralForCausalLM directory (every layer MoE, top-2 only)")
    p.add_argument("--max-shard-size", default="2GB", help="split the weights into files of at most this size")
    p.add_argument("--tokenizer", help="tokenizer to copy (default: the run config's data.tokenizer)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")     # DeepSpeed's unpickler must not probe for a GPU
    from koda.checkpoint.convert import convert_checkpoint

    summary = convert_checkpoint(args.checkpoint, args.output, tag=args.tag, dtype=args.dtype, fmt=args.format,
                                 max_shard_size=args.max_shard_size, tokenizer=args.tokenizer)
    print("\n".join(summary.lines()))
    return 0
