#!/usr/bin/env python
"""RL step throughput: where a step's time goes, and rollouts against standalone generation.

In one session:
  (a) the standalone model (the same starting weights, one process, every core) samples the
      same number of completions of the same length from the same train-task prompts; run
      before and after the RL runs, the baseline is the mean (the host's speed drifts);
  (b) ``koda train --stage rl`` for --steps steps per --chunks value, from --init-from; the
      per-phase times come from its metrics (``time/*``), averaged over the steps after
      the first (warm-up).
Printed: each phase's seconds and share of the step, the judge's busy time and how much of it
was hidden behind generation (``1 - judge_wait / judging``), and rollout tokens/s (both ranks
together) against (a).

    python tools/bench_rl.py --init-from runs/smoke --steps 6 --chunks 1,2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from koda.report.runs import Run
from koda.report.variants import run_variant

PHASES = ("generation", "judge_wait", "reference_fwd", "critic_fwd", "critic_bwd", "actor_fwd", "actor_bwd",
          "encoder_fwd", "encoder_bwd")


def standalone_tokens_per_s(args, rl, world: int) -> float:
    """(a): completions of exactly rl.max_new_tokens tokens for the prompts every rank samples."""
    from koda.config import run as run_config
    from koda.data.prepare import prepare
    from koda.infer import GenerationConfig, generate
    from koda.infer.loading import load_model
    from koda.tasks import build_tasks

    cfg = run_config.load(args.config)
    tokenizer = prepare(cfg.data, cfg.model.vocab_size, build_missing=False, log=lambda *_: None)
    model = load_model(args.init_from).model.eval()
    tasks = [t for t in build_tasks(seed=rl.task_seed, train=rl.tasks_train, heldout=0) if t.split == "train"]
    prompts = [tokenizer.encode(t.prompt)[-(cfg.model.max_seq_len - rl.max_new_tokens):]
               for t in tasks[:rl.prompts_per_step * world] for _ in range(rl.samples_per_prompt)]
    gen = GenerationConfig(strategy="sample", max_new_tokens=rl.max_new_tokens, temperature=rl.temperature, seed=1)
    start = time.perf_counter()
    with torch.no_grad():
        generate(model, prompts, gen, eos_id=None)
    return len(prompts) * rl.max_new_tokens / (time.perf_counter() - start)


def rl_run(args, chunks: int, root: Path) -> Run:
    return run_variant(args.config, root / f"chunks{chunks}", [f"rl.rollout_chunks={chunks}",
                       f"train.checkpoint_every={args.steps}", *args.set], stage="rl", steps=args.steps,
                       init_from=args.init_from)


def means_after_first(run: Run, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Each `prefixes` metric's mean over the logged lines after the first (the step-0
    evaluation), a line without the metric counting 0 (a phase that did not run)."""
    steps = run.times.steps[1:]
    kept = set(steps)
    return {key: sum(v for s, v in zip(series.steps, series.values, strict=True) if s in kept) / len(steps)
            for key, series in run.scalars.items() if key.startswith(prefixes)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-from", required=True)
    p.add_argument("--config", default="rl_smoke")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--chunks", default="1,2", help="rl.rollout_chunks values to run")
    p.add_argument("--set", action="append", default=[], help="run-config override for the RL runs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step is warm-up)")
    from koda.config import run as run_config

    cfg = run_config.load(args.config, args.set)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    before = standalone_tokens_per_s(args, cfg.rl, cfg.world_size)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for chunks in (int(c) for c in args.chunks.split(",")):
            runs[chunks] = rl_run(args, chunks, Path(tmp))
    after = standalone_tokens_per_s(args, cfg.rl, cfg.world_size)
    baseline = (before + after) / 2
    report = {"standalone_tokens_per_s": {"before": before, "after": after, "mean": baseline}, "runs": {}}
    for chunks, run in runs.items():
        mean = means_after_first(run, ("time/", "perf/"))
        rollout = mean["perf/rollout_tokens_per_s"] * cfg.world_size          # per-rank figure, both ranks
        report["runs"][chunks] = {"step_s": mean["perf/step_s"], "phases": {ph: mean.get(f"time/{ph}", 0.0)
                                                                            for ph in PHASES},
                                  "judging_s": mean["time/judging"],
                                  "judge_hidden": mean["perf/judge_hidden_fraction"],
                                  "rollout_tokens_per_s": rollout, "vs_standalone": rollout / baseline}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"standalone model: {baseline:,.0f} tokens/s (before {before:,.0f}, after {after:,.0f})")
    for chunks, r in report["runs"].items():
        step = r["step_s"]
        print(f"\nrl.rollout_chunks {chunks}: {step:.2f} s per step (mean of {args.steps - 1} steps after the first)")
        print("| phase | s | share |\n|---|---|---|")
        for ph, s in r["phases"].items():
            print(f"| {ph} | {s:.2f} | {s / step:.0%} |")
        other = step - sum(r["phases"].values())
        print(f"| other (prompts, rewards' AST terms, advantages, metrics) | {other:.2f} | {other / step:.0%} |")
        print(f"judging {r['judging_s']:.2f} s, of which {r['judge_hidden']:.0%} hidden behind generation; "
              f"rollouts {r['rollout_tokens_per_s']:,.0f} tokens/s = {r['vs_standalone']:.2f}x the standalone model")


if __name__ == "__main__":
    main()
