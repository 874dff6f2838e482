"""Compare fine-tuning objectives from one pre-trained run under one wall-clock budget.

    python tools/rl_compare.py --init-from runs/smoke --out runs/rl-compare --budget-s 240 --seeds 1,2

Variants (all ``koda train --stage rl --config rl_smoke`` with overrides, same start, same
``train.time_budget_s`` of training steps):
  a  CE only on the train tasks' reference programs (lrl = lvw = 0: nothing is generated)
  b  CE + actor-critic RL (GAE from the critic, PPO clip, KL to the frozen reference)
  c  b + WGAN-GP (encoder, Gumbel-softmax adversarial term)
  d  CE + group-advantage RL (GRPO, no critic, no encoder)
Each finished run is scored with ``koda eval`` on the held-out split (greedy, pass@1,
complexity met, syntax valid); the table at the end has every run, then the mean and the
spread (max - min) over seeds. Runs and reports already in --out are reused, so an
interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from koda.report.runs import load_run
from koda.report.variants import run_variant, train_command
from koda.run_layout import RunLayout

VARIANTS = {
    "a": ("CE only", ["rl.lrl=0", "rl.lvw=0"]),
    "b": ("CE + actor-critic RL", ["rl.advantage=gae", "rl.lvw=0"]),
    "c": ("CE + RL + WGAN-GP", ["rl.advantage=gae"]),
    "d": ("CE + group-advantage RL", ["rl.advantage=grpo", "rl.lvw=0"]),
}
KODA = [sys.executable, "-m", "koda"]


def train(run: Path, args, seed: int, overrides: list[str]) -> None:
    layout = RunLayout(run)
    if layout.metrics.is_file() and any(layout.checkpoints.glob("step*/COMPLETE")):
        return
    sets = [f"train.seed={seed}", f"train.time_budget_s={args.budget_s}", "train.steps=100000",
            "train.checkpoint_every=100000", *overrides, *args.set]
    print("$", " ".join(train_command(args.config, run, sets, stage="rl", init_from=args.init_from)[2:]), flush=True)
    run_variant(args.config, run, sets, stage="rl", init_from=args.init_from)


def evaluate(model: str | Path, report: Path, args) -> dict:
    if not report.is_file():
        cmd = [*KODA, "eval", "--model", str(model), "--tasks", "koda:heldout", "--temperature", "0",
               "--max-new-tokens", str(args.max_new_tokens), "--no-wandb", "--out", str(report)]
        print("$", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def run_summary(run: Path) -> dict:
    """Steps reached and tokens trained on, from the run's metrics."""
    metrics = load_run(run)
    rl = metrics.config["rl"]
    samples = rl["prompts_per_step"] * rl["samples_per_prompt"]          # per rank per step
    last = metrics.by_step()[max(metrics.times.steps)]
    completion = metrics.scalars.get("rl/completion_tokens")
    return {"steps": max(metrics.times.steps), "seconds": last.get("perf/elapsed_s", 0.0),
            "rollout_tokens": samples * sum(completion.values if completion else ())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-from", required=True, help="pre-trained run or model every variant starts from")
    p.add_argument("--out", default="runs/rl-compare")
    p.add_argument("--config", default="rl_smoke")
    p.add_argument("--budget-s", type=float, default=240.0, help="seconds of training steps per run")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--variants", default="abcd")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--set", action="append", default=[], help="an override for every variant")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [("start", "-", {"steps": 0, "seconds": 0.0, "rollout_tokens": 0.0},
             evaluate(args.init_from, out / "start_eval.json", args))]
    for seed in (int(s) for s in args.seeds.split(",")):
        for v in args.variants:
            run = out / f"{v}-seed{seed}"
            train(run, args, seed, VARIANTS[v][1])
            rows.append((v, seed, run_summary(run), evaluate(run, out / f"{v}-seed{seed}_eval.json", args)))
    print("\n| variant | seed | steps | train s | tokens sampled per rank | pass@1 | complexity met | syntax valid |")
    print("|---|---|---|---|---|---|---|---|")
    for v, seed, s, e in rows:
        name = VARIANTS[v][0] if v in VARIANTS else "pre-trained start"
        print(f"| {name} | {seed} | {s['steps']} | {s['seconds']:.0f} | {s['rollout_tokens']:.0f} | "
              f"{e['pass@1']:.3f} | {e['complexity_met']:.3f} | {e['syntax_valid']:.3f} |")
    print("\n| variant | runs | pass@1 mean (spread) | complexity met mean (spread) | syntax valid mean (spread) |")
    print("|---|---|---|---|---|")
    for v in args.variants:
        got = [e for name, _, _, e in rows if name == v]
        cells = []
        for key in ("pass@1", "complexity_met", "syntax_valid"):
            vals = [e[key] for e in got]
            cells.append(f"{sum(vals) / len(vals):.3f} ({max(vals) - min(vals):.3f})")
        print(f"| {VARIANTS[v][0]} | {len(got)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
