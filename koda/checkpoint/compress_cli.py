"""``koda compress``: Tucker-compress the expert weights of a converted model directory.

    koda compress models/smoke --output models/smoke-r32 --ranks 4,32,32
    koda compress models/smoke --output m --ranks gate_up_proj=4,128,32 --ranks down_proj=4,32,64
    koda compress models/smoke --output models/smoke-half --ratio 0.5

Ranks are per mode in the stored order: gate_up_proj [E, 2F, D], down_proj [E, D, F].
--ratio keeps the expert mode at full rank and shrinks the other two (docs/compress.md).
"""

from __future__ import annotations

import argparse

from koda.checkpoint import tucker


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda compress",
                                description="Tucker-compress the expert tensors of a standalone model directory.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("model", metavar="MODEL_DIR", help="a koda convert output directory (KODA layout)")
    p.add_argument("--output", "-o", required=True, help="directory to create (must not exist)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--ranks", action="append", metavar="[KIND=]E,R1,R2",
                      help="Tucker ranks per mode, for every expert tensor or one kind (gate_up_proj, down_proj)")
    size.add_argument("--ratio", type=float, help="target core + factors size as a fraction of each tensor")
    p.add_argument("--iterations", type=int, default=tucker.ITERATIONS,
                   help=f"most HOOI sweeps after the HOSVD start (default {tucker.ITERATIONS})")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from koda.checkpoint.compress import compress_model_dir, parse_ranks

    ranks = parse_ranks(args.ranks) if args.ranks else None
    summary = compress_model_dir(args.model, args.output, ranks=ranks, ratio=args.ratio,
                                 iterations=args.iterations)
    print("\n".join(summary.lines()))
    return 0
