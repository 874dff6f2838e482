"""``koda topology show FILE``: the torus, the chosen placement against file order, and the model's figures.

Usage:
    koda topology show launchers/topologies/torus-4x4x2x2.yaml
    koda topology show FILE --json                       # the same, as JSON for scripts
    koda topology show FILE --dense-params 7e9 --expert-params 4.2e10
    koda topology show FILE --rank 5 --message-bytes 64e6   # that rank's group latency
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from koda.errors import KodaError
from koda.topology.report import describe, format_text
from koda.topology.spec import load_topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="koda topology", description="Show a topology file, its placement and latency model."
    )
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print the torus, placement, per-group hops and latency figures")
    show.add_argument("file", help="topology YAML file (see docs/launching.md)")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.add_argument("--dense-params", type=float, help="override workload.dense_params")
    show.add_argument("--expert-params", type=float, help="override workload.expert_params")
    show.add_argument("--rank", type=int, help="also print the modelled group latency of this global rank")
    show.add_argument("--message-bytes", type=float, default=64e6, help="buffer size for --rank (default 64e6)")
    show.add_argument(
        "--swap-budget",
        type=int,
        help="placement swap-search evaluations (default: as koda launch, 300 or fewer on big clusters)",
    )
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    topology = load_topology(args.file)
    for flag, value in (("--dense-params", args.dense_params), ("--expert-params", args.expert_params)):
        if value is not None and not value >= 0:
            raise KodaError(f"{flag} {value} must be >= 0")
    workload = dataclasses.replace(
        topology.workload,
        **{
            k: v
            for k, v in (("dense_params", args.dense_params), ("expert_params", args.expert_params))
            if v is not None
        },
    )
    if args.rank is not None and not 0 <= args.rank < topology.world_size:
        raise KodaError(f"--rank {args.rank} outside 0..{topology.world_size - 1}")
    d = describe(
        topology,
        workload=workload,
        rank=args.rank,
        message_bytes=args.message_bytes,
        swap_budget=args.swap_budget,
    )
    print(json.dumps(d, indent=1) if args.json else format_text(d))
    return 0
