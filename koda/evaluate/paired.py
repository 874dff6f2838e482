"""Per-task scores of evaluation samples, and the paired bootstrap between two models.

Two models evaluated on the same tasks differ by less than their separate intervals
suggest: most of the spread of a pass rate is which tasks happen to be easy, and that is
shared. The paired bootstrap resamples tasks, keeping each task's pair of scores together,
so only the per-task differences drive the interval.

    scores = task_scores(rows, "passed")                 # {task_id: mean over its samples}
    low, high = paired_interval(diffs)                   # 95 % interval of the mean difference
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from koda.errors import KodaError
from koda.evaluate.passk import pass_at_k


def task_scores(rows: list[dict], metric: str) -> dict[str, float]:
    """{task_id: score} from ``koda eval --write-samples`` rows. `metric`: a row field read as
    0/1 and averaged over the task's samples ("passed", "syntax_ok", "complexity_met"; rows
    whose field is None, tasks without a target, are left out), or "pass@k" (the unbiased
    estimate from the task's n samples)."""
    by_task: dict[str, list] = defaultdict(list)
    for r in rows:
        by_task[r["task_id"]].append(r)
    if metric.startswith("pass@"):
        k = int(metric[5:])
        return {t: pass_at_k(len(rs), sum(bool(r["passed"]) for r in rs), k) for t, rs in by_task.items()}
    out = {}
    for t, rs in by_task.items():
        values = [float(bool(r[metric])) for r in rs if r.get(metric) is not None]
        if values:
            out[t] = sum(values) / len(values)
    return out


def paired_differences(runs: list[tuple[dict[str, float], dict[str, float]]]) -> np.ndarray:
    """[T] per-task differences (variant - baseline), averaged over the pairs of `runs` (one
    (variant scores, baseline scores) pair per seed). Every pair must score the same tasks."""
    if not runs:
        raise KodaError("paired differences: no runs")
    tasks = sorted(runs[0][0])
    for variant, baseline in runs:
        if sorted(variant) != tasks or sorted(baseline) != tasks:
            raise KodaError("paired differences: the runs did not score the same tasks")
    return np.array([[v[t] - b[t] for t in tasks] for v, b in runs]).mean(axis=0)


def paired_interval(diffs: np.ndarray, level: float = 0.95, resamples: int = 10_000,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(diffs) over resampled tasks (diffs: [T])."""
    if diffs.ndim != 1 or diffs.size == 0:
        raise KodaError(f"paired interval: needs a non-empty vector of per-task differences, got {diffs.shape}")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
