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
import json
import subprocess
import sys
import time
from pathlib import Path

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


def run(config: str, steps: int, router: str, root: Path, extra: list[str]) -> tuple[list[dict], float]:
    run_dir = root / router
    log_every = max(1, steps // 4)
    sets = [*overrides(router), "logging.wandb_mode=disabled", "logging.progress_bar=false",
            f"train.log_every={log_every}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}"]
    command = [sys.executable, "-m", "koda", "train", "--config", config, "--steps", str(steps),
               "--run-dir", str(run_dir), *(x for kv in sets for x in ("--set", kv)), *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()], seconds


def summarise(records: list[dict]) -> dict:
    last = [r for r in records if "moe/load_std" in r][-1]
    return {"val_loss": next(r["val/loss"] for r in reversed(records) if "val/loss" in r),
            "max_min": last["moe/load_max_min"], "std": last["moe/load_std"], "util": last["moe/utilisation"],
            "aux": last["train/aux_loss"], "tok_s": last["perf/tokens_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--steps", type=int, default=40, help="above the smoke schedule's 30 warmup steps")
    p.add_argument("--routers", nargs="+", choices=ROUTERS, default=list(ROUTERS))
    p.add_argument("--root", default="runs/routers", help="run directories go to ROOT/<router> (must not exist)")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    args = p.parse_args()
    routers = ["topk", *(r for r in args.routers if r != "topk")]          # the baseline first, always
    extra = [x for kv in args.set for x in ("--set", kv)]
    print(f"config {args.config}, {args.steps} steps per router; load = last logged window, worst layer")
    print(f"{'router':>12} {'val loss':>9} {'vs topk':>8} {'max/min':>8} {'load std':>9} {'util':>5} "
          f"{'aux':>6} {'tok/s vs topk':>13} {'wall s':>7}", flush=True)
    base = None
    for router in routers:                      # each row as soon as its run ends
        records, seconds = run(args.config, args.steps, router, Path(args.root), extra)
        row = summarise(records)
        base = base or row
        print(f"{router:>12} {row['val_loss']:>9.4f} {row['val_loss'] - base['val_loss']:>+8.4f} "
              f"{row['max_min']:>8.2f} {row['std']:>9.4f} {row['util']:>5.2f} {row['aux']:>6.3f} "
              f"{row['tok_s'] / base['tok_s']:>13.2f} {seconds:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
