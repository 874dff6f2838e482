#!/usr/bin/env python
"""Rollout speed: sampling from the 2-rank ZeRO-3 + AutoEP actor vs the standalone model.

In one run, on the same prompts (each rank takes every second one), every prompt sampling
exactly --new-tokens tokens (--top-k, --temperature; no end-of-sequence):
  (a) the standalone model in one process (``koda.infer.generate``, --threads threads),
      before and after the ranks run (the baseline is their mean: the host's speed drifts),
  (b) ``koda.distributed.rollout`` for each --experts mode: gather once per phase into a
      hook-free replica, then decode; "local" gathers every expert on every rank and runs
      no collective per token, "parallel" keeps each rank's experts and runs AutoEP's
      all-to-all (and one agreement) per token, in lockstep; timed with and without the gather,
  (c) with --old, the per-token re-gather path these replace: ``koda.infer.generate`` on
      ``engine.module``,
and prints tokens/s and each one's cost per token against (a), plus where the first mode's
time goes (cProfile on rank 0: gather, all-to-all, the per-step agreement, the rest). The
standalone model has the engine's initial weights (same seed), the weights converting it
would give.

    python tools/bench_rollout.py                              # smoke preset, 8 prompts, 32 tokens
    python tools/bench_rollout.py --prompts 32 --new-tokens 96 --prompt-lengths 60 140   # an RL step's size
    python tools/bench_rollout.py --prompts 16 --new-tokens 64 --json

Goal tracked: (b) at most 1.5x the standalone model's cost per token.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from koda.infer import GenerationConfig, generate
from koda.infer.benchmark import random_prompts
from koda.model import KodaForCausalLM, preset


def sampling(args) -> GenerationConfig:
    return GenerationConfig(strategy="sample", top_k=args.top_k, temperature=args.temperature,
                            max_new_tokens=args.new_tokens, seed=1)


def standalone(args, prompts: list[list[int]]) -> dict[str, list[float]]:
    """(a): wall and CPU seconds per repeat."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = KodaForCausalLM(preset(args.model)).eval()
    times: dict[str, list[float]] = {"wall": [], "cpu": []}
    for i in range(args.warmup + args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        generate(model, prompts, sampling(args), eos_id=None)
        if i >= args.warmup:
            times["wall"].append(time.perf_counter() - wall)
            times["cpu"].append(time.process_time() - cpu)
    return times


def _parts(profiler: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of the functions that make up a rollout's overheads (none calls another)."""
    from deepspeed.module_inject import auto_ep_layer

    from koda.distributed import rollout

    parts = {"gather": [rollout._gather_all],
             "all_to_all": [auto_ep_layer.compute_split_plan, auto_ep_layer._AllToAllV.forward],
             "agree": [rollout.agree_across_ranks]}
    keys = {(f.__code__.co_filename, f.__code__.co_firstlineno, f.__code__.co_name): part
            for part, functions in parts.items() for f in functions}
    out = {part: 0.0 for part in parts}
    for key, (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
        if key in keys:
            out[keys[key]] += cumulative
    return out


def worker(args) -> None:
    """(b) and (c) on each rank."""
    from koda.distributed.rank_start import start_rank

    start_rank()
    from koda.distributed import comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.distributed.rollout import rollout_phase

    cfg = preset(args.model)
    resolved = ds_config.resolve(ds_config.load("zero3_ep_smoke.json"), model=cfg, world_size=comm.world_size(),
                                 train_steps=1000, bf16_supported=False)
    torch.manual_seed(0)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, cfg), resolved)
    rank, world = comm.rank(), comm.world_size()
    prompts = json.loads(Path(args.prompts_file).read_text())[rank::world]
    sample = sampling(args)

    def timed(run) -> tuple[float, float]:
        """-> (wall seconds, CPU seconds summed over the ranks)."""
        comm.barrier()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        cpu = time.process_time() - cpu
        comm.barrier()
        wall = time.perf_counter() - wall
        return wall, float(comm.all_reduce_sum(torch.tensor([cpu]))[0])

    def phase(experts: str, gather_only: bool = False):
        with rollout_phase(engine, experts) as p:
            if not gather_only:
                p.generate(prompts, sample, step=0, eos_id=None)

    def old():
        generate(engine.module, prompts, sample, eos_id=None)

    modes = args.experts.split(",")
    runs = {**{f"rollout {m}": functools.partial(phase, m) for m in modes},
            **{f"gather {m}": functools.partial(phase, m, gather_only=True) for m in modes},
            **({"per_token_gather": old} if args.old else {})}
    result: dict = {key: [] for key in runs}            # [(wall, cpu)] per repeat
    for i in range(args.warmup + args.repeats):
        row = [timed(run) for run in runs.values()]
        if i >= args.warmup:
            for key, value in zip(result, row, strict=True):
                result[key].append(value)
    profiler = cProfile.Profile() if rank == 0 else None
    if profiler:
        profiler.enable()
    profiled = timed(functools.partial(phase, modes[0]))
    if profiler:
        profiler.disable()
        result["profile_s"] = profiled[0]
        result["parts_s"] = _parts(profiler)
        result["steps"] = args.new_tokens
        if args.profile_top:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.profile_top)
            result["profile"] = text.getvalue()
        Path(args.worker_out).write_text(json.dumps(result))


def run_ranks(args, prompts_file: Path) -> dict:
    from koda.distributed.local_launch import launch_ranks

    out = prompts_file.with_name("ranks.json")
    proc = launch_ranks(__file__, [
        "--worker-out", str(out), "--prompts-file", str(prompts_file), "--model", args.model,
        "--new-tokens", str(args.new_tokens), "--top-k", str(args.top_k), "--temperature", str(args.temperature),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--experts", args.experts, "--profile-top", str(args.profile_top),
        *(["--old"] if args.old else [])], world=2, module=False)
    if proc.returncode != 0:
        sys.exit(f"bench_rollout: the 2-rank run failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smoke", help="model preset")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt-lengths", type=int, nargs=2, default=(16, 48), metavar=("MIN", "MAX"))
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="threads of the standalone process (ranks get cores / 2 each, i.e. 1 here)")
    p.add_argument("--experts", default="local,parallel", help="rollout_phase modes to time (the first is profiled)")
    p.add_argument("--old", action="store_true", help="also time the per-token re-gather path (slow)")
    p.add_argument("--profile-top", type=int, default=0, help="print rank 0's N costliest functions (cProfile)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_out:
        worker(args)
        return

    cfg = preset(args.model)
    prompts = random_prompts(cfg.vocab_size, args.prompts, tuple(args.prompt_lengths))
    prompts_file = Path(tempfile.mkdtemp()) / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    before = standalone(args, prompts)
    ranks = run_ranks(args, prompts_file)
    after = standalone(args, prompts)
    tokens = len(prompts) * args.new_tokens
    report = {"model": args.model, "prompts": len(prompts), "new_tokens": args.new_tokens,
              "standalone": {"before": before, "after": after}, "ranks": ranks}
    for clock, index in (("wall", 0), ("cpu", 1)):
        base = statistics.mean(statistics.median(t[clock]) for t in (before, after))
        median = {key: statistics.median(r[index] for r in ranks[key])
                  for key in ranks if key.startswith(("rollout", "gather", "per_token"))}
        seconds = {"standalone (1 process)": base}
        for mode in args.experts.split(","):
            seconds[f"rollout {mode}, gather included"] = median[f"rollout {mode}"]
            seconds[f"rollout {mode}, decode only"] = median[f"rollout {mode}"] - median[f"gather {mode}"]
        if args.old:
            seconds["per-token re-gather (old)"] = median["per_token_gather"]
        report[clock] = {name: {"tokens_per_s": tokens / s, "cost_vs_standalone": s / base}
                         for name, s in seconds.items()}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.model}: {sum(t.numel() for t in KodaForCausalLM(cfg).parameters()) / 1e6:.1f}M parameters, fp32; "
          f"{len(prompts)} prompts of {args.prompt_lengths[0]}-{args.prompt_lengths[1]} tokens, "
          f"{args.new_tokens} sampled tokens each; 2 ranks x 1 thread vs 1 process x {args.threads} thread(s)")
    print("CPU: process CPU seconds (both ranks summed) per token, the work done; wall: elapsed")
    print(f"{'':<36}{'tokens/s CPU':>14}{'cost vs standalone':>20}{'tokens/s wall':>15}{'cost':>8}")
    for name in report["cpu"]:
        c, w = report["cpu"][name], report["wall"][name]
        print(f"{name:<36}{c['tokens_per_s']:>14.1f}{c['cost_vs_standalone']:>19.2f}x"
              f"{w['tokens_per_s']:>15.1f}{w['cost_vs_standalone']:>7.2f}x")
    parts, total = ranks["parts_s"], ranks["profile_s"]
    rest = total - sum(parts.values())
    print(f"where one {args.experts.split(',')[0]} rollout phase's {total:.3f} s (wall) go on rank 0 "
          f"(cProfile, {args.new_tokens} steps): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in {**parts, "model compute + sampling": rest}.items()))
    if "profile" in ranks:
        print(ranks["profile"])
    print("standalone before/after the ranks (wall): "
          f"{statistics.median(before['wall']):.3f} / {statistics.median(after['wall']):.3f} s")


if __name__ == "__main__":
    main()
