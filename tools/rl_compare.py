"""Does RL from executed code beat continued CE? Four objectives from one warm start, one budget.

    python tools/rl_compare.py --init-from runs/warm-start --out runs/rl-compare \\
        --budget-s 1200 --seeds 1,2,3 --parallel 4

Variants (``koda train --stage rl --config rl_warm_start`` with overrides, the same start and
``train.time_budget_s`` of training steps each):
  a  CE only, continued on the train tasks' reference programs (nothing is generated)
  b  CE + GRPO (group advantages, no critic, no encoder)
  c  CE + actor-critic (GAE from the critic, PPO clip)
  d  c + WGAN-GP (the encoder's adversarial term)
All RL variants keep the KL to the frozen warm start. ``--parallel N`` trains N runs of a
seed at once, each on ``--threads`` threads: the variants of a seed then share the machine
for the same minutes, so a load that slows one slows all (the previous seed's evaluations
run beside them, the start's beside the first seed's). Every run logs the held-out probe
(``probe/pass_rate`` every ``train.eval_every`` steps) beside its reward terms and KL.

Each run and the start are then scored on the held-out split (``koda eval``, samples kept):
greedy pass@1, complexity met (greedy, measured) and syntax valid; pass@1 and pass@8 from 8
samples at temperature 0.8. The report: every run; each variant's mean and spread (max -
min) over seeds; each variant minus (a) with a paired bootstrap 95 % interval (tasks
resampled, each task's difference averaged over seeds); complexity met among passing
programs per family; curves in ``<out>/curves.png``. Finished runs and evaluations in --out
are reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from koda.evaluate.paired import paired_differences, paired_interval, task_scores
from koda.report.runs import load_run
from koda.report.variants import run_jobs, train_command
from koda.run_layout import RunLayout

# The probe runs every train.eval_every steps: a CE step costs ~1/20 of an RL step, so CE
# probes 20x less often per step and the curves get a similar number of points per second.
VARIANTS = {
    "a": ("CE only", ["rl.lrl=0", "rl.lvw=0", "train.eval_every=500"]),
    "b": ("CE + GRPO", ["rl.advantage=grpo", "rl.lvw=0", "train.eval_every=25"]),
    "c": ("CE + actor-critic (GAE)", ["rl.advantage=gae", "rl.lvw=0", "train.eval_every=25"]),
    "d": ("CE + actor-critic + WGAN-GP", ["rl.advantage=gae", "rl.lvw=0.1", "train.eval_every=25"]),
}
EVALS = {"greedy": ["--temperature", "0"],
         "t0.8": ["--n", "8", "--temperature", "0.8", "--k", "1,8", "--seed", "0", "--no-measure"]}
# (label, eval kind, koda eval sample field or pass@k)
METRICS = (("greedy pass@1", "greedy", "passed"), ("pass@1 t0.8", "t0.8", "pass@1"), ("pass@8 t0.8", "t0.8", "pass@8"),
           ("complexity met", "greedy", "complexity_met"), ("syntax valid", "greedy", "syntax_ok"))
TRAIN = " (train)"        # a training job's name suffix in run_jobs
CURVES = ("probe/pass_rate", "rl/reward/tests", "rl/reward/total", "rl/kl_ref", "val/heldout_ce")


def trained(run: Path) -> bool:
    layout = RunLayout(run)
    return layout.metrics.is_file() and any(layout.checkpoints.glob("step*/COMPLETE"))


def train_job(run: Path, args, seed: int, overrides: list[str]) -> tuple[str, list[str], Path]:
    sets = [f"train.seed={seed}", f"train.time_budget_s={args.budget_s}", *overrides, *args.set]
    cmd = train_command(args.config, run, sets, stage="rl", init_from=args.init_from)
    return run.name + TRAIN, cmd, run.parent / "logs" / f"{run.name}.log"


def eval_jobs(model: Path, name: str, out: Path, args) -> list[tuple[str, list[str], Path]]:
    """koda eval runs for `model` not yet done; each writes under .tmp names, renamed once it
    exits 0 (`finish_eval`), so a killed evaluation never looks complete."""
    jobs = []
    for kind, flags in EVALS.items():
        stem = out / f"{name}_{kind}"
        if Path(f"{stem}.jsonl").is_file():
            continue
        cmd = [sys.executable, "-m", "koda", "eval", "--model", str(model), "--tasks", "koda:heldout",
               "--task-seed", str(args.task_seed), "--heldout", "3", "--batch", "72",
               "--max-new-tokens", str(args.max_new_tokens), "--no-wandb", *flags,
               "--out", f"{stem}.json.tmp", "--write-samples", f"{stem}.jsonl.tmp"]
        jobs.append((f"{name}_{kind}", cmd, out / "logs" / f"eval_{name}_{kind}.log"))
    return jobs


def finish_eval(out: Path, stem: str) -> None:
    for suffix in (".json", ".jsonl"):          # the samples last: they mark the evaluation done
        (out / f"{stem}{suffix}.tmp").rename(out / f"{stem}{suffix}")


def samples(out: Path, name: str, kind: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{name}_{kind}.jsonl").read_text().splitlines() if line]


def run_summary(run: Path) -> dict:
    """Steps, training seconds and completions sampled, from the run's metrics."""
    metrics = load_run(run)
    rl = metrics.config["rl"]
    step = max(metrics.times.steps)
    last = metrics.by_step()[step]
    sampled = rl["prompts_per_step"] * rl["samples_per_prompt"] * metrics.config["world_size"] * step
    return {"steps": step, "seconds": last.get("perf/elapsed_s", 0.0),
            "samples": sampled if rl["lrl"] > 0 or rl["lvw"] > 0 else 0}


def scores(out: Path, name: str) -> dict[str, dict[str, float]]:
    """{metric label: {task_id: score}} of one evaluated model."""
    return {label: task_scores(samples(out, name, kind), field) for label, kind, field in METRICS}


def report(out: Path, args, names: dict[str, list[str]]) -> None:
    table = {name: scores(out, name) for runs in names.values() for name in runs} | {"start": scores(out, "start")}
    mean = lambda s: sum(s.values()) / len(s)
    labels = [m[0] for m in METRICS]
    print("\n| run | steps | train s | completions sampled | " + " | ".join(labels) + " |")
    print("|---|---|---|---|" + "---|" * len(labels))
    print("| start (warm start) | 0 | 0 | 0 | " + " | ".join(f"{mean(table['start'][m]):.3f}" for m in labels) + " |")
    for runs in names.values():
        for name in runs:
            s = run_summary(out / name)
            print(f"| {name} | {s['steps']} | {s['seconds']:.0f} | {s['samples']} | "
                  + " | ".join(f"{mean(table[name][m]):.3f}" for m in labels) + " |")
    print(f"\nMean (spread = max - min over seeds) and, against (a), the mean paired difference "
          f"[95 % bootstrap interval over the {len(table['start'][labels[0]])} held-out tasks]:\n")
    print("| variant | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for v, runs in names.items():
        cells = []
        for m in labels:
            vals = [mean(table[n][m]) for n in runs]
            cell = f"{np.mean(vals):.3f} ({max(vals) - min(vals):.3f})"
            if v != "a" and "a" in names:
                d = paired_differences([(table[n][m], table[b][m]) for n, b in zip(runs, names["a"], strict=True)])
                lo, hi = paired_interval(d, seed=args.bootstrap_seed)
                cell += f"; {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"
            cells.append(cell)
        print(f"| {v}: {VARIANTS[v][0]} | " + " | ".join(cells) + " |")
    complexity_by_family(out, names)


def complexity_by_family(out: Path, names: dict[str, list[str]]) -> None:
    """Greedy programs that pass, and the share of those meeting the growth target, per family."""
    groups = {"start": ["start"], **{v: runs for v, runs in names.items()}}
    counts: dict[str, dict[str, list[int]]] = {g: defaultdict(lambda: [0, 0]) for g in groups}
    for g, runs in groups.items():
        for name in runs:
            for r in samples(out, name, "greedy"):
                if r["passed"] and r["complexity_met"] is not None:
                    counts[g][r["family"]][0] += 1
                    counts[g][r["family"]][1] += bool(r["complexity_met"])
    families = sorted({f for c in counts.values() for f in c})
    print("\nComplexity met among passing greedy programs, per family (met / passing, seeds pooled):\n")
    print("| family | " + " | ".join(groups) + " |")
    print("|---|" + "---|" * len(groups))
    for f in families:
        print(f"| {f} | " + " | ".join(f"{counts[g][f][1]}/{counts[g][f][0]}" if counts[g][f][0] else "-"
                                       for g in groups) + " |")


def curves(out: Path, names: dict[str, list[str]]) -> Path:
    """CURVES against training seconds: each seed thin, the variant's mean over seeds thick."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(CURVES), 3.6), layout="constrained")
    axes = fig.subplots(1, len(CURVES))
    colors = dict(zip(VARIANTS, ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c"), strict=True))
    for ax, key in zip(axes, CURVES, strict=True):
        for v, runs in names.items():
            grid, rows = None, []
            for name in runs:
                run = load_run(out / name)
                if key not in run.scalars:
                    continue
                seconds = dict(zip(run.scalars["perf/elapsed_s"].steps, run.scalars["perf/elapsed_s"].values,
                                   strict=True)) | {0: 0.0}
                s = run.scalars[key]
                xs = [seconds[step] for step in s.steps if step in seconds]
                ys = [y for step, y in zip(s.steps, s.values, strict=True) if step in seconds]
                ax.plot(xs, ys, color=colors[v], alpha=0.3, linewidth=0.8)
                grid = np.linspace(0, max(xs), 40) if grid is None else grid
                rows.append(np.interp(grid, xs, ys))
            if rows:
                ax.plot(grid, np.mean(rows, axis=0), color=colors[v], linewidth=2, label=f"{v}: {VARIANTS[v][0]}")
        ax.set_title(key)
        ax.set_xlabel("training seconds")
    axes[0].legend(fontsize=7)
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-from", required=True, help="the warm start every variant starts from")
    p.add_argument("--out", default="runs/rl-compare")
    p.add_argument("--config", default="rl_warm_start")
    p.add_argument("--budget-s", type=float, default=1200.0, help="seconds of training steps per run")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--variants", default="abcd")
    p.add_argument("--parallel", type=int, default=1, help="training runs at once")
    p.add_argument("--eval-parallel", type=int, default=2, help="evaluations at once, beside the training runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=384, help="evaluation token budget (koda eval's default)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="an override for every variant")
    p.add_argument("--report-only", action="store_true", help="print the report of what is already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = {v: [f"{v}-seed{s}" for s in seeds] for v in args.variants}
    if not args.report_only:
        evals = eval_jobs(Path(args.init_from), "start", out, args)
        for seed in [*seeds, None]:
            # a seed's runs train together while the models before them are evaluated
            trains = [train_job(out / f"{v}-seed{seed}", args, seed, VARIANTS[v][1]) for v in args.variants
                      if seed is not None and not trained(out / f"{v}-seed{seed}")]
            run_jobs(trains + evals, len(trains) + min(len(evals), args.eval_parallel), args.threads,
                     on_success=lambda name: finish_eval(out, name) if not name.endswith(TRAIN) else None)
            evals = [job for v in args.variants if seed is not None
                     for job in eval_jobs(out / f"{v}-seed{seed}", f"{v}-seed{seed}", out, args)]
    report(out, args, names)
    print(f"\ncurves: {curves(out, names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
