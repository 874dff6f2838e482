#!/usr/bin/env python
"""The same training run once per MoE router: validation loss and expert load, topk the baseline.

Each router trains the given run config for --steps steps (same data order, same seed, same
schedule) through ``koda train``. ``topk`` keeps the config's DeepSpeed config (AutoEP on
the smoke config); the other routers run with expert parallelism off
(``ds_configs/zero3_smoke.json``, ZeRO-3 still partitions the experts), and ``switch`` and
``hash`` with ``model.top_k 1`` (they send each token to one expert, so they also run about
half the expert FLOPs of top-2). The table gives the final validation loss and its change
against topk, and the load of the last logged window, worst layer: busiest/idlest expert,
the standard deviation of the experts' shares, and the fraction of experts that got tokens.

    python tools/compare_routers.py --config smoke --steps 40
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from koda.report.runs import Run
from koda.report.variants import run_variant

ROUTERS = ("topk", "switch", "hash", "topk_gumbel")
NO_EP_DS_CONFIG = "zero3_smoke.json"


def overrides(router: str) -> list[str]:
    """The ``--set`` assignments that switch a run config to `router`."""
    out = [f"model.router={router}"]
    if router != "topk":
        out.append(f"ds_config={NO_EP_DS_CONFIG}")
    if router in ("switch", "hash"):
        out.append("model.top_k=1")
    return out


def run(config: str, steps: int, router: str, root: Path, extra: list[str]) -> tuple[Run, float]:
    sets = [*overrides(router), f"train.log_every={max(1, steps // 4)}", f"train.eval_every={steps}",
            f"train.checkpoint_every={steps}", *extra]
    start = time.perf_counter()
    result = run_variant(config, root / router, sets, steps=steps)
    return result, time.perf_counter() - start


def summarise(run: Run) -> dict:
    """The final validation loss, and the load figures of the last window that logged them."""
    window = run.by_step()[run.scalars["moe/load_std"].last[0]]
    return {"val_loss": run.scalars["val/loss"].last[1],
            "max_min": window["moe/load_max_min"], "std": window["moe/load_std"], "util": window["moe/utilisation"],
            "aux": window["train/aux_loss"], "tok_s": window["perf/tokens_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--steps", type=int, default=40, help="above the smoke schedule's 30 warmup steps")
    p.add_argument("--routers", nargs="+", choices=ROUTERS, default=list(ROUTERS))
    p.add_argument("--root", default="runs/routers", help="run directories go to ROOT/<router> (must not exist)")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    args = p.parse_args()
    routers = ["topk", *(r for r in args.routers if r != "topk")]          # the baseline first, always
    print(f"config {args.config}, {args.steps} steps per router; load = last logged window, worst layer")
    print(f"{'router':>12} {'val loss':>9} {'vs topk':>8} {'max/min':>8} {'load std':>9} {'util':>5} "
          f"{'aux':>6} {'tok/s vs topk':>13} {'wall s':>7}", flush=True)
    base = None
    for router in routers:                      # each row as soon as its run ends
        result, seconds = run(args.config, args.steps, router, Path(args.root), args.set)
        row = summarise(result)
        base = base or row
        print(f"{router:>12} {row['val_loss']:>9.4f} {row['val_loss'] - base['val_loss']:>+8.4f} "
              f"{row['max_min']:>8.2f} {row['std']:>9.4f} {row['util']:>5.2f} {row['aux']:>6.3f} "
              f"{row['tok_s'] / base['tok_s']:>13.2f} {seconds:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
