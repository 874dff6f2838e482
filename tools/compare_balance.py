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
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run(config: str, steps: int, weight: float, root: Path, extra: list[str]) -> list[dict]:
    run_dir = root / f"aux-{weight:g}"
    command = [sys.executable, "-m", "koda", "train", "--config", config, "--steps", str(steps),
               "--run-dir", str(run_dir), "--set", f"moe.aux_loss_weight={weight}",
               "--set", "logging.wandb_mode=disabled", "--set", "logging.progress_bar=false", *extra]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summarise(records: list[dict]) -> dict:
    logged = [r for r in records if "moe/load_max_min" in r]
    half = logged[len(logged) // 2:]
    layers = sorted({k for r in logged for k in r if k.endswith("/load_max_min") and "layer" in k})
    return {"final": logged[-1]["moe/load_max_min"],
            "mean_2nd_half": statistics.mean(r["moe/load_max_min"] for r in half),
            "max_2nd_half": max(r["moe/load_max_min"] for r in half),
            "per_layer_final": [round(logged[-1][k], 2) for k in layers],
            "val_loss": next(r["val/loss"] for r in reversed(records) if "val/loss" in r)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.01])
    p.add_argument("--root", default="runs/balance")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    args = p.parse_args()
    extra = [x for kv in args.set for x in ("--set", kv)]
    rows = {w: summarise(run(args.config, args.steps, w, Path(args.root), extra)) for w in args.weights}
    print(f"{'aux weight':>10} {'final max/min':>14} {'mean 2nd half':>14} {'max 2nd half':>13} "
          f"{'val loss':>9}  final max/min per layer")
    for weight, row in rows.items():
        print(f"{weight:>10g} {row['final']:>14.2f} {row['mean_2nd_half']:>14.2f} {row['max_2nd_half']:>13.2f} "
              f"{row['val_loss']:>9.4f}  {row['per_layer_final']}")


if __name__ == "__main__":
    main()
