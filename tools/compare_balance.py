#!/usr/bin/env python
"""The same 2-rank ZeRO-3 + AutoEP run with and without KODA's balancing loss.

DeepSpeed's AutoEP has no load balancing of its own; this shows what ``moe.aux_loss_weight``
does to the expert load. Each run trains the given config for --steps steps; the table gives,
per run, the expert load max/min ratio (tokens of the busiest expert over the idlest, worst
layer) at the end and averaged over the second half, and the final validation loss.

    python tools/compare_balance.py --config smoke --steps 300 --weights 0 0.01
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from koda.report.runs import Run
from koda.report.variants import run_variant


def run(config: str, steps: int, weight: float, root: Path, overrides: list[str]) -> Run:
    return run_variant(config, root / f"aux-{weight:g}", [f"moe.aux_loss_weight={weight}", *overrides], steps=steps)


def summarise(run: Run) -> dict:
    load = run.scalars["moe/load_max_min"]
    half = load.values[len(load.values) // 2:]
    layers = sorted(k for k in run.scalars if k.endswith("/load_max_min") and "layer" in k)
    return {"final": load.last[1], "mean_2nd_half": statistics.mean(half), "max_2nd_half": max(half),
            "per_layer_final": [round(run.scalars[k].last[1], 2) for k in layers],
            "val_loss": run.scalars["val/loss"].last[1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.01])
    p.add_argument("--root", default="runs/balance")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    args = p.parse_args()
    rows = {w: summarise(run(args.config, args.steps, w, Path(args.root), args.set)) for w in args.weights}
    print(f"{'aux weight':>10} {'final max/min':>14} {'mean 2nd half':>14} {'max 2nd half':>13} "
          f"{'val loss':>9}  final max/min per layer")
    for weight, row in rows.items():
        print(f"{weight:>10g} {row['final']:>14.2f} {row['mean_2nd_half']:>14.2f} {row['max_2nd_half']:>13.2f} "
              f"{row['val_loss']:>9.4f}  {row['per_layer_final']}")


if __name__ == "__main__":
    main()
