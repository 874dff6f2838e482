#!/usr/bin/env python
"""RL step throughput: where a step's time goes, and rollouts against standalone generation.

In one session:
  (a) KODA's standalone generator (``koda.infer.generate``, the ``koda generate`` path: the
      same starting weights, one process) samples the same number of completions of the
      same length from the same train-task prompts as one RL step, with one thread and with
      one per core; run before and after the RL runs, each thread count's figure is their
      mean (the host's speed drifts) and the baseline is the faster one (on a shared host a
      two-thread process can stall at its intra-op barriers and run 10x slower);
  (b) ``koda train --stage rl`` for --steps steps per variant (each --chunks value times each
      --experts value), from --init-from or from a random smoke model (--random-weights,
      saved once and used by (a) and (b) alike; a random model samples until
      ``rl.max_new_tokens``, which is fine for tokens/s); the per-phase times come from its
      metrics (``time/*``), averaged over the steps after the first (warm-up).
Printed per variant: each phase's seconds and share of the step, the judge's busy time and
how much of it was hidden behind generation (``1 - judge_wait / judging``), and rollout
tokens/s (both ranks together) against (a), as a ratio.

    python tools/bench_rl.py --init-from runs/smoke --steps 6 --chunks 1,2
    # GRPO, 8 prompts x 4 samples per step on 2 ranks, random smoke model, both rollout modes:
    python tools/bench_rl.py --random-weights --grpo --steps 4 --experts local,parallel
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from koda.report.runs import Run
from koda.report.variants import run_variant

# time/* metrics of a step, in the order they run; rollout_gather is part of generation
PHASES = ("generation", "rollout_gather", "judge_wait", "reference_fwd", "critic_fwd", "critic_bwd", "actor_fwd",
          "actor_bwd", "encoder_fwd", "encoder_bwd")
GRPO = ("rl.advantage=grpo", "rl.lvw=0", "rl.prompts_per_step=4", "rl.samples_per_prompt=4")


def standalone_tokens_per_s(cfg, init_from: str, threads: int) -> float:
    """(a): completions of exactly rl.max_new_tokens tokens for the prompts every rank samples."""
    from koda.data.prepare import prepare
    from koda.infer import GenerationConfig, generate
    from koda.infer.loading import load_model
    from koda.rl.step import prompt_ids
    from koda.tasks import build_tasks

    rl, world = cfg.rl, cfg.world_size
    tokenizer = prepare(cfg.data, cfg.model.vocab_size, log=lambda *_: None)
    model = load_model(init_from).model.eval()
    tasks = [t for t in build_tasks(seed=rl.task_seed, train=rl.tasks_train, heldout=0) if t.split == "train"]
    prompts = [prompt_ids(tokenizer, tasks[i % len(tasks)].prompt, cfg.model.max_seq_len - rl.max_new_tokens)
               for i in range(rl.prompts_per_step * world) for _ in range(rl.samples_per_prompt)]
    gen = GenerationConfig(strategy="sample", max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                           top_k=rl.top_k, top_p=rl.top_p, seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        with torch.no_grad():
            generate(model, prompts, gen, eos_id=None)
        return len(prompts) * rl.max_new_tokens / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def random_source(cfg, root: Path) -> Path:
    """A random-weight model of the config's architecture, saved as a standalone model."""
    from koda.checkpoint import save_standalone
    from koda.model import KodaForCausalLM

    torch.manual_seed(cfg.train.seed)
    out = root / "random-model"
    save_standalone(KodaForCausalLM(cfg.model), out)
    return out


def rl_run(args, init_from, overrides: list[str], root: Path, name: str) -> Run:
    return run_variant(args.config, root / name, [f"train.checkpoint_every={args.steps}", *overrides],
                       stage="rl", steps=args.steps, init_from=init_from)


def means_after_first(run: Run, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Each `prefixes` metric's mean over the logged lines after the first (the step-0
    evaluation), a line without the metric counting 0 (a phase that did not run)."""
    steps = run.times.steps[1:]
    kept = set(steps)
    return {key: sum(v for s, v in zip(series.steps, series.values, strict=True) if s in kept) / len(steps)
            for key, series in run.scalars.items() if key.startswith(prefixes)}


def summarize(mean: dict[str, float], world: int, baseline: float) -> dict:
    rollout = mean["perf/rollout_tokens_per_s"] * world          # per-rank figure, both ranks
    return {"step_s": mean["perf/step_s"], "phases": {ph: mean.get(f"time/{ph}", 0.0) for ph in PHASES},
            "judging_s": mean["time/judging"], "judge_hidden": mean["perf/judge_hidden_fraction"],
            "rollout_tokens_per_s": rollout, "vs_standalone": rollout / baseline}


def print_run(name: str, r: dict, steps: int) -> None:
    step = r["step_s"]
    print(f"\n{name}: {step:.2f} s per step (mean of {steps - 1} steps after the first)")
    print("| phase | s | share |\n|---|---|---|")
    for ph, s in r["phases"].items():
        label = "  of which replica gather" if ph == "rollout_gather" else ph
        print(f"| {label} | {s:.2f} | {s / step:.0%} |")
    other = step - sum(s for ph, s in r["phases"].items() if ph != "rollout_gather")
    print(f"| other (prompts, rewards' AST terms, advantages, metrics, logging) | {other:.2f} | {other / step:.0%} |")
    print(f"judging {r['judging_s']:.2f} s, of which {r['judge_hidden']:.0%} hidden behind generation; "
          f"rollouts {r['rollout_tokens_per_s']:,.0f} tokens/s = {r['vs_standalone']:.2f}x the standalone generator")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--init-from", help="the actor's starting weights (a run, checkpoint or standalone model)")
    source.add_argument("--random-weights", action="store_true", help="a random model of the config's architecture")
    p.add_argument("--config", default="rl_smoke")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--chunks", default="1", help="rl.rollout_chunks values to run")
    p.add_argument("--experts", default="local",
                   help="rl.rollout_experts values to run (local, parallel; default: the config's, set nothing)")
    p.add_argument("--grpo", action="store_true", help="GRPO without critic or encoder: " + " ".join(GRPO))
    p.add_argument("--set", action="append", default=[], help="run-config override (all runs, and the baseline)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step is warm-up)")
    from koda.config import run as run_config

    overrides = [*(GRPO if args.grpo else ()), *args.set]
    cfg = run_config.load(args.config, overrides)
    thread_counts = sorted({1, os.cpu_count() or 1})
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        init_from = str(random_source(cfg, Path(tmp)) if args.random_weights else args.init_from)
        before = {n: standalone_tokens_per_s(cfg, init_from, n) for n in thread_counts}
        for chunks, experts in itertools.product(args.chunks.split(","), args.experts.split(",")):
            name = f"chunks {chunks}, experts {experts}"
            mode = [] if experts == "default" else [f"rl.rollout_experts={experts}"]
            runs[name] = rl_run(args, init_from, [*overrides, f"rl.rollout_chunks={chunks}", *mode], Path(tmp),
                                f"c{chunks}-{experts}")
        after = {n: standalone_tokens_per_s(cfg, init_from, n) for n in thread_counts}
    standalone = {n: {"before": before[n], "after": after[n], "mean": (before[n] + after[n]) / 2}
                  for n in thread_counts}
    baseline = max(s["mean"] for s in standalone.values())
    report = {"overrides": overrides, "standalone_tokens_per_s": standalone, "baseline_tokens_per_s": baseline,
              "runs": {name: summarize(means_after_first(run, ("time/", "perf/")), cfg.world_size, baseline)
                       for name, run in runs.items()}}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    rl = cfg.rl
    print(f"{args.config} ({' '.join(overrides) or 'as shipped'}): {rl.prompts_per_step * cfg.world_size} prompts x "
          f"{rl.samples_per_prompt} samples of up to {rl.max_new_tokens} tokens per step on {cfg.world_size} ranks")
    print(f"standalone generator: {baseline:,.0f} tokens/s, the faster of "
          + "; ".join(f"{n} thread(s) {s['mean']:,.0f} (before {s['before']:,.0f}, after {s['after']:,.0f})"
                      for n, s in standalone.items()))
    for name, r in report["runs"].items():
        print_run(name, r, args.steps)


if __name__ == "__main__":
    main()
