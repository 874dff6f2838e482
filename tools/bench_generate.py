#!/usr/bin/env python
"""Decoding speed: greedy with and without the KV cache, sampling, and contrastive search
(k=4, alpha=0.6) on the same model in one run, with each mode's cost relative to greedy.

    python tools/bench_generate.py                          # smoke preset, random init
    python tools/bench_generate.py --model out/smoke --prompts 8 --new-tokens 128
    python tools/bench_generate.py --profile                # where the time goes, per mode

The goal tracked here: contrastive search at most 1.5x the per-token cost of greedy with
the cache. On a shared machine read the ratios, not the absolute figures (docs/inference.md).
"""

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys

import torch

from koda.infer import benchmark
from koda.infer.loading import load_model
from koda.model.config import PRESETS, preset
from koda.model.transformer import KodaForCausalLM


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="standalone model or run directory (default: random-init --preset)")
    p.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--prompt-lengths", type=int, nargs=2, default=(24, 64), metavar=("MIN", "MAX"))
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, help="prompts per generate call (default: all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.6)
    p.add_argument("--threads", type=int)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--profile", action="store_true", help="print torch.profiler and cProfile tables per mode")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        model = load_model(args.model, args.dtype).model
    else:
        torch.manual_seed(0)
        model = KodaForCausalLM(preset(args.preset)).eval().to(torch.bfloat16 if args.dtype == "bf16" else None)
    prompts = benchmark.random_prompts(model.cfg.vocab_size, args.prompts, tuple(args.prompt_lengths))
    modes = benchmark.default_modes(args.k, args.alpha)
    results = benchmark.run(model, prompts, args.new_tokens, modes, args.repeats, args.warmup, args.batch)
    ratios = {clock: benchmark.ratios(results, clock) for clock in ("cpu", "wall")}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "threads": torch.get_num_threads(), "load_avg": [round(x, 2) for x in os.getloadavg()],
               "torch": torch.__version__}
    if args.json:
        print(json.dumps({"machine": machine, "modes": {n: r.summary() for n, r in results.items()},
                          "cost_vs_greedy": ratios}, indent=1))
    else:
        params = sum(t.numel() for t in model.parameters())
        print(f"model {args.model or args.preset + ' (random init)'}: {params / 1e6:.1f}M parameters, "
              f"{args.dtype}; {len(prompts)} prompts of {args.prompt_lengths[0]}-{args.prompt_lengths[1]} tokens, "
              f"batch {args.batch or len(prompts)}, {args.new_tokens} new tokens each; "
              f"{args.repeats} interleaved repeats")
        print(f"machine: {machine}")
        print(f"{'':<16}{'tokens/s (CPU time)':^28}{'tokens/s (wall)':^22}{'cost vs greedy':^28}")
        print(f"{'mode':<16}{'median':>9}{'min':>9}{'max':>9}{'median':>11}{'max':>9}"
              f"{'CPU (min-max)':>21}{'wall':>7}")
        for name, res in results.items():
            s = res.summary()
            c, w, rc, rw = s["cpu_tokens_per_s"], s["wall_tokens_per_s"], ratios["cpu"][name], ratios["wall"][name]
            print(f"{name:<16}{c['median']:>9.1f}{c['min']:>9.1f}{c['max']:>9.1f}{w['median']:>11.1f}{w['max']:>9.1f}"
                  f"{rc['median']:>8.2f}x ({rc['min']:.2f}-{rc['max']:.2f}){rw['median']:>6.2f}x")
        context = (args.prompt_lengths[0] + args.prompt_lengths[1]) // 2 + args.new_tokens // 2
        floor = benchmark.forward_floor(model, args.batch or len(prompts), args.k, context)
        print(f"floor: a decode forward over k={args.k} candidates per row costs {floor:.2f}x one over a single "
              f"token (batch {args.batch or len(prompts)}, {context} cached tokens)")
        clock = "cpu" if torch.get_num_threads() == 1 else "wall"   # spinning threads inflate CPU time
        goal = ratios[clock]["contrastive"]["median"]
        verdict = "met" if goal <= 1.5 else "NOT met"
        print(f"contrastive / greedy-with-cache cost ({clock} time, median): {goal:.2f}x (goal <= 1.5x: {verdict})")
    if args.profile:
        for name, cfg in modes.items():
            print(f"\n=== torch.profiler, {name} ===")
            print(benchmark.profile(model, prompts, args.new_tokens, cfg))
            stats = io.StringIO()
            prof = cProfile.Profile()
            prof.runcall(benchmark.run, model, prompts, args.new_tokens, {name: cfg}, 1, 0, args.batch)
            pstats.Stats(prof, stream=stats).sort_stats("cumulative").print_stats(18)
            print(f"=== cProfile (cumulative), {name} ===\n" + stats.getvalue().split("\n\n", 1)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
