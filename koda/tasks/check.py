"""Checks that hold the task set to what it claims, run as tests and as ``koda tasks check``.

1. Every reference passes its own tests in the sandbox (through the one judge).
2. Wherever a target bound is set, ``koda verify`` on the reference derives exactly that
   bound and its empirical fit agrees.
3. The splits share no instance: no normal form (``build.normal_form``) and no normalised
   prompt text appears in both, and no train reference passes a held-out task's tests
   (``koda.tasks.behaviour``, run in this process under a line budget).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from koda.tasks.build import normal_form, normal_text
from koda.tasks.schema import Task

EXP_TOL = 1e-6   # derived exponents are exact up to the root finder's tolerance
BASE_TOL = 1e-6  # relative, for exponential bases


def same_bound(target: dict, bound: dict | None) -> bool:
    """Whether ``koda verify``'s ``bound`` is exactly ``target`` (up to root-finding precision)."""
    if bound is None or bound.get("kind") != target["kind"]:
        return False
    if target["kind"] == "exponential":
        return math.isclose(bound["base"], target["base"], rel_tol=BASE_TOL)
    return (abs(bound["n_exponent"] - target["n_exponent"]) <= EXP_TOL
            and bound["log_exponent"] == target["log_exponent"])


@dataclass
class CheckReport:
    rows: list[dict]                                 # per task: task_id, family, split, passed, derived, agree
    overlaps: list[tuple[str, str]] = field(default_factory=list)  # (train id, heldout id) sharing an instance
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def family_table(self) -> list[dict]:
        """family, count per split, target bound, how many targets verified and agreed."""
        table: dict[str, dict] = {}
        for r in self.rows:
            t = table.setdefault(r["family"], {"family": r["family"], "train": 0, "heldout": 0, "target": [],
                                               "references_pass": 0, "targets": 0, "targets_derived": 0,
                                               "empirical_agrees": 0})
            t[r["split"]] += 1
            if r["target_text"] not in t["target"]:
                t["target"].append(r["target_text"])
            t["references_pass"] += r["passed"]
            if r["derived"] is not None:  # a target, and the complexity check ran
                t["targets"] += 1
                t["targets_derived"] += bool(r["derived"])
                t["empirical_agrees"] += bool(r["agree"])
        for t in table.values():
            t["target"] = ", ".join(sorted(t["target"]))
        return list(table.values())

    def to_json(self) -> dict:
        return {"ok": self.ok, "problems": self.problems, "families": self.family_table(),
                "overlaps": self.overlaps, "tasks": self.rows}


def target_text(target: dict | None) -> str:
    if target is None:
        return "-"
    if target["kind"] == "exponential":
        return f"Θ({target['base']:.4g}^n)"
    from koda.analysis.symbolic import polylog_text

    return f"Θ({polylog_text(target['n_exponent'], target['log_exponent'])})"


def overlaps(tasks: list[Task]) -> list[tuple[str, str]]:
    """(train task, held-out task) pairs with the same normal form or normalised prompt, or
    whose train reference returns the held-out task's expected output on every test input."""
    from koda.tasks.behaviour import load_function, matching, probe

    seen: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        if t.split == "train":
            seen[normal_form(t.program())].append(t.task_id)
            seen["text:" + normal_text(t.prompt)].append(t.task_id)
    found = []
    for t in tasks:
        if t.split == "heldout":
            for key in (normal_form(t.program()), "text:" + normal_text(t.prompt)):
                found += [(other, t.task_id) for other in seen.get(key, [])]
    held = [t for t in tasks if t.split == "heldout"]
    probes = [probe(t.program(), t.entry_point, t.test) for t in held]
    for t in tasks:
        fn = load_function(t.program(), t.entry_point) if t.split == "train" else None
        if fn is not None:
            found += [(t.task_id, held[i].task_id) for i in matching(fn, probes)]
    return list(dict.fromkeys(found))


def check_tasks(tasks: list[Task], *, verify: bool = True, budget_s: float = 2.0, pool=None) -> CheckReport:
    """Run the three checks; ``verify=False`` skips the complexity one (it costs seconds per task)."""
    from koda.judge import Submission, judge

    subs = [Submission(t.program(), t.tests(), t.entry_point, complexity=verify and t.target is not None)
            for t in tasks]
    verdicts = judge(subs, pool=pool, budget_s=budget_s)
    report = CheckReport([])
    for t, v in zip(tasks, verdicts, strict=True):
        cx = v.complexity or {}
        derived = t.target is not None and same_bound(t.target, cx.get("bound"))
        row = {"task_id": t.task_id, "family": t.family, "split": t.split, "target_text": target_text(t.target),
               "passed": v.passed, "derived": derived if verify and t.target else None,
               "derived_text": cx.get("bound_text"), "agree": cx.get("agree") if verify and t.target else None,
               "agreement": cx.get("agreement")}
        report.rows.append(row)
        if not v.passed:
            report.problems.append(f"{t.task_id}: reference fails its tests ({v.tests.status})")
        if verify and t.target is not None:
            if not derived:
                got = cx.get("bound_text") or cx.get("undecided_reason") or cx.get("error")
                report.problems.append(f"{t.task_id}: target {target_text(t.target)}, verify derived {got}")
            elif not cx.get("agree"):
                report.problems.append(f"{t.task_id}: empirical fit disagrees ({cx.get('agreement')})")
    report.overlaps = overlaps(tasks)
    report.problems += [f"{a} and {b} are one instance in two splits" for a, b in report.overlaps]
    return report
