"""Measure a function's growth in the sandbox and compare it with the derived bound.

The measurement program (``instrument``) runs through ``koda.sandbox.run_program``: the
function under test is untrusted generated code like any other. Inputs follow the roles
the extractor found for the parameters: the size parameter gets n, list parameters get
n random integers (a sorted list of even numbers when the function searches, with an odd
target it never finds, so every search takes its longest path), matrices get n x n,
``lo``/``hi`` get 0 and n - 1, other numbers get small constants.

Sizes: powers of two for divide-and-conquer recurrences (uneven halves only add noise),
consecutive integers for exponential ones, and a 1.3x geometric ladder otherwise. The
driver stops when its time budget or operation cap is reached, so a Theta(2^n) function
yields a couple of dozen points and a Theta(log n) one reaches n = 2^20.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

from koda.analysis import fit as fitting
from koda.analysis.instrument import measurement_program
from koda.analysis.recurrence import Extraction
from koda.errors import KodaError

MAX_OPS = 20_000_000


@dataclass
class Measurement:
    spec: list[str]
    points: list[list[float]] = field(default_factory=list)  # [n, ops, calls, seconds]
    fit: fitting.Fit | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        out = self.fit.as_dict() if self.fit else {"kind": None}
        return out | {
            "inputs": self.spec,
            "points": [{"n": p[0], "ops": p[1], "calls": p[2], "seconds": p[3]} for p in self.points],
            "error": self.error,
        }


def input_spec(func: ast.FunctionDef, ext: Extraction) -> list[str] | None:
    """One input kind per parameter (see ``instrument.measurement_program``), or None."""
    roles = ext.roles
    params = [a.arg for a in func.args.args]
    size = list(ext.size_params)
    if not size:  # undecided: still measure, with the first number or list as n
        size = [p for p in params if roles[p] == "int"][:1] or [p for p in params if roles[p] == "seq"][:1]
    if not size:
        return None
    notes = " ".join(ext.recurrence.assumptions) if ext.recurrence else ""
    pair = len(size) == 2 and all(roles[p] == "int" for p in size)
    searching = pair or any(r == "other" for r in roles.values()) and any(r == "seq" for r in roles.values())
    lists = [p for p in size if roles[p] == "seq"]
    spec, small = [], 1
    for p in params:
        if pair and p in size:
            spec.append("lo" if p == size[0] else "hi")
        elif roles[p] == "int" and p in size:
            spec.append("n")
        elif roles[p] == "seq":
            kind = "matrix" if f"rows of {p}" in notes else "sorted" if searching else "list"
            spec.append("half-list" if len(lists) == 2 and p in lists else kind)
        elif roles[p] == "other" and searching:
            spec.append("absent")
        else:
            spec.append(str(small))
            small += 1
    return spec


def sizes_for(shape: str) -> list[int]:
    """``shape``: 'divide', 'exponential' or anything else (geometric)."""
    if shape == "divide":
        return [2**k for k in range(1, 21)]
    if shape == "exponential":
        return list(range(1, 64))
    return sorted({round(1.3**i) for i in range(0, 53)})


def measure(tree: ast.Module, func: ast.FunctionDef, ext: Extraction, shape: str,
            budget_s: float = 3.0, runner=None) -> Measurement:
    """Run the instrumented function at growing n in the sandbox and fit its growth."""
    spec = input_spec(func, ext)
    if spec is None:
        return Measurement([], error="no int or list parameter to grow")
    if runner is None:
        from koda.sandbox import SandboxPolicy, run_program

        def runner(src):
            return run_program(src, policy=SandboxPolicy(timeout_s=budget_s + 15, memory_mb=2048))
    program = measurement_program(tree, func.name, spec, sizes_for(shape), budget_s, MAX_OPS)
    try:
        result = runner(program)
    except KodaError as err:  # e.g. an isolation layer missing on this host: say so, do not run
        return Measurement(spec, error=f"sandbox refused to run: {err}")
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (result.stderr.strip().splitlines() or [""])[-1][:300]
        return Measurement(spec, error=f"measurement run ended with status {result.status}: {tail}")
    out = json.loads(lines[-1])
    m = Measurement(spec, out["points"], error=out.get("error") or out.get("stopped"))
    m.fit = fitting.select(m.points)
    if m.fit is None and m.error is None:
        m.error = "fewer than 4 measured points within the time budget"
    return m
