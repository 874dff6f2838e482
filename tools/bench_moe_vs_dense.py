#!/usr/bin/env python
"""The MoE model against a dense model of equal active parameters per token, same tokens.

Both run through ``koda train`` (2 CPU ranks, DeepSpeed ZeRO-3) for --steps steps of the
same DeepSpeed batch, so they see the same number of tokens. The dense model keeps the MoE
model's d_model, layers and attention and replaces each MoE layer's k experts of width F
by one expert of width k·F (``model.n_experts=1``, ``model.top_k=1``,
``model.ffn_hidden=k·F``): with a single expert the router's softmax weight is exactly 1,
so the block computes a plain SwiGLU of width k·F and a token multiplies through the same
FFN weights as in the MoE model (the 1-wide router replaces the E-wide one: D·(E-1) fewer
parameters per layer). With ``--dense-ep on`` (the default) the dense run keeps AutoEP on
(expert-parallel size gcd(2, 1) = 1); ``--dense-ep off`` gives it a copy of the DeepSpeed
config with ``expert_parallel.enabled: false`` instead.

Printed, per model and as dense/MoE ratio: training FLOPs per token (``koda.run.flops``),
tokens/s (mean of ``perf/tokens_per_s`` over the logged windows after the first, so
start-up and the first steps' warm-up are out), the matmul FLOP/s that implies, the final
validation loss and the wall time of the whole ``koda train`` call. The run directories are
``koda scaling`` inputs:

    python tools/bench_moe_vs_dense.py --steps 60 --root runs/moe-vs-dense
    koda scaling runs/moe-vs-dense/moe --breakpoints auto --plot moe.png
    koda scaling runs/moe-vs-dense/dense --breakpoints auto --plot dense.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from koda.config import run as run_config
from koda.distributed import ds_config as ds
from koda.report.runs import load_run
from koda.report.variants import VariantFailed, run_variant
from koda.scaling.points import flops_per_token


def dense_overrides(model) -> list[str]:
    """--set overrides turning the MoE model's experts into one SwiGLU of the active width."""
    return ["model.n_experts=1", "model.top_k=1", f"model.ffn_hidden={model.top_k * model.ffn_hidden}"]


def train(name: str, args, root: Path, overrides: list[str]) -> dict:
    run = root / name
    if run.exists():
        raise SystemExit(f"bench_moe_vs_dense: {run} exists; remove it or pass another --root")
    sets = [f"train.eval_every={args.eval_every}", f"train.eval_batches={args.eval_batches}",
            f"train.log_every={args.log_every}", f"train.checkpoint_every={args.steps}", *args.set, *overrides]
    start = time.perf_counter()
    try:
        run_variant(args.config, run, sets, steps=args.steps, capture=True)
    except VariantFailed as err:
        tail = "\n".join(err.output.splitlines()[-15:])
        raise SystemExit(f"bench_moe_vs_dense: the {name} run failed (exit {err.returncode}):\n{tail}") from None
    return summarise(run, time.perf_counter() - start)


def summarise(run: Path, wall: float | None) -> dict:
    """The figures of one finished run directory (wall time None when it was not timed here)."""
    metrics = load_run(run)
    speeds = metrics.scalars["perf/tokens_per_s"].values
    fpt, _ = flops_per_token(metrics.config, run)
    tokens_per_s = statistics.mean(speeds[1:] if len(speeds) > 1 else speeds)
    return {"run": str(run), "flops_per_token": fpt, "tokens_per_s": tokens_per_s,
            "model_flops_per_s": tokens_per_s * fpt, "val_loss": metrics.scalars["val/loss"].last[1],
            "wall_s": wall, "ep": metrics.ds_config.get("expert_parallel", {})}


def machine_label(load_before: float, load_after: float) -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()}-core CPU ({cpu}), load average {load_before:.1f} before / {load_after:.1f} after "
            "(1-min; the 2 ranks account for about 2)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke", help="the MoE run config (preset name or YAML path)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=5, help="validations are the points koda scaling fits")
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--root", default="runs/moe-vs-dense")
    p.add_argument("--dense-ep", choices=("on", "off"), default="on",
                   help="keep AutoEP on for the dense run (1 expert) or give it a config with it off")
    p.add_argument("--summarise-only", action="store_true",
                   help="train nothing: print the table of the runs already in --root (no wall times)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for both runs")
    args = p.parse_args()
    root = Path(args.root)
    cfg = run_config.load(args.config, args.set)
    overrides = dense_overrides(cfg.model)
    if args.dense_ep == "off":
        plain = ds.load(cfg.ds_config)
        plain["expert_parallel"] = {**plain.get("expert_parallel", {}), "enabled": False}
        root.mkdir(parents=True, exist_ok=True)
        (root / "dense_ds_config.json").write_text(json.dumps(plain, indent=1))
        overrides.append(f"ds_config={(root / 'dense_ds_config.json').resolve()}")
    run_config.load(args.config, [*args.set, *overrides])     # a bad dense config fails before any run
    load_before = os.getloadavg()[0]
    if args.summarise_only:
        rows = {name: summarise(root / name, None) for name in ("moe", "dense")}
    else:
        dense = train("dense", args, root, overrides)    # first: the less tried of the two fails early
        rows = {"moe": train("moe", args, root, []), "dense": dense}
    label = machine_label(load_before, os.getloadavg()[0])
    moe, dense = rows["moe"], rows["dense"]
    print(f"{args.config} MoE (E={cfg.model.n_experts}, k={cfg.model.top_k}, F={cfg.model.ffn_hidden}) vs dense "
          f"(FFN {cfg.model.top_k * cfg.model.ffn_hidden}, AutoEP {args.dense_ep}), {args.steps} steps each; {label}")
    print(f"{'':>18} {'MoE':>12} {'dense':>12} {'dense/MoE':>10}")
    for key, label_, fmt in (("flops_per_token", "FLOPs/token", ".4g"), ("tokens_per_s", "tokens/s", ",.0f"),
                             ("model_flops_per_s", "model FLOP/s", ".3g"), ("val_loss", "final val loss", ".4f"),
                             ("wall_s", "wall s", ".1f")):
        if moe[key] is None or dense[key] is None:
            continue
        print(f"{label_:>18} {moe[key]:>12{fmt}} {dense[key]:>12{fmt}} {dense[key] / moe[key]:>10.3f}")
    (root / "summary.json").write_text(json.dumps({"machine": label, "steps": args.steps, **rows}, indent=1))
    print(f"run directories {moe['run']} and {dense['run']}; fit them with: koda scaling {moe['run']}")


if __name__ == "__main__":
    main()
