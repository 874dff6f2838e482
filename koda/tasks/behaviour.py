"""Behavioural equality of two tasks: a train reference that passes a held-out task's tests.

Two references with different normal forms can still compute the same function on every
input the tests try: a quicksort with another pivot, an edit distance whose substitution
cost is never the cheapest, x^n mod m written naively or by squaring. A model trained on one
has then seen the other's answer, so the splits compare behaviour too: a train reference
whose outputs equal a held-out task's expected outputs on *all* of that task's test inputs
is the same instance.

The outputs are computed here, in this process, on the tests' small inputs: the references
are KODA's own code, or the references of a tasks file the user asked to check (which
``koda tasks check`` runs anyway). A reference called on another family's inputs may loop
for long (a summing loop given 10^9, a recurrence whose terms grow to 10^5 digits), so each
call runs under a budget of executed lines (``sys.settrace``): ``SLACK`` times what the
held-out task's own reference runs on that input, plus ``FLOOR_LINES``. One that runs out,
or raises, is "not equal": a program that slow would time out the task's tests anyway.
A line count, not a clock: the split must not depend on how busy the machine is, and a
trace works in any thread. Relative, not fixed: a fixed budget large enough for the
costliest reference lets a runaway loop on big integers take seconds and gigabytes.
Cost: most comparisons stop at the first input (a 64 + 3 per family set, ~1,600 train
references against 72 held-out tasks, takes a few seconds).

Values are compared by ``repr`` as well as ``==``, so ``True`` is not ``1`` and ``1.0`` is
not ``1``: the tests' expected values are exact.
"""

from __future__ import annotations

import ast
import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass

from koda import ast_parse

SLACK = 20            # a candidate may run this many times the lines the task's own reference runs ...
FLOOR_LINES = 2_000   # ... plus these, per test input

Case = tuple[tuple, object]   # (argument tuple, expected output)


class _OutOfTime(BaseException):
    """Raised inside a reference by the guard; a BaseException so no ``except Exception`` eats it."""


def cases_from_test(test: str) -> list[Case]:
    """(args, expected) of every ``assert candidate(<literals>) == <literal>`` in a ``check`` source.

    Other asserts (a HumanEval file's ``abs(candidate(x) - y) < 1e-6``) are not cases: they
    cannot be replayed on another function, so they are left out of the comparison."""
    try:
        tree = ast_parse.parse(test)
    except SyntaxError:
        return []
    cases = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
                and isinstance(node.test.ops[0], ast.Eq) and isinstance(node.test.left, ast.Call)
                and isinstance(node.test.left.func, ast.Name) and node.test.left.func.id == "candidate"
                and not node.test.left.keywords):
            continue
        try:
            args = tuple(ast.literal_eval(a) for a in node.test.left.args)
            expected = ast.literal_eval(node.test.comparators[0])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        cases.append((args, expected))
    return cases


def load_function(program: str, entry_point: str) -> Callable | None:
    """The entry point of ``program`` executed in a fresh namespace; None if it does not load."""
    scope: dict = {"__name__": "__koda_reference__"}
    try:
        exec(compile(program, f"<reference {entry_point}>", "exec"), scope)  # noqa: S102 (references)
    except Exception:  # noqa: BLE001 - a reference that does not load matches nothing
        return None
    fn = scope.get(entry_point)
    return fn if callable(fn) else None


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and a == b and repr(a) == repr(b)
    except Exception:  # noqa: BLE001 - an odd value compares unequal
        return False


@dataclass(frozen=True)
class Probe:
    """A held-out task's replayable tests and the lines its own reference runs on each."""

    cases: list[Case]
    lines: list[int]


def probe(program: str, entry_point: str, test: str) -> Probe | None:
    """The task's cases with its reference's cost on each; None when the reference does not
    load or does not itself return the expected outputs (nothing to compare with)."""
    fn = load_function(program, entry_point)
    cases = cases_from_test(test)
    if fn is None or not cases:
        return None
    lines = []
    for case in cases:
        used = _run(fn, case, FLOOR_LINES * 1000)
        if used is None:
            return None
        lines.append(used)
    return Probe(cases, lines)


def matching(fn: Callable, probes: list[Probe | None], first: bool = False) -> list[int]:
    """Indices of the probes whose every expected output ``fn`` returns, each case within
    ``SLACK`` times the lines the probe's own reference ran plus ``FLOOR_LINES``;
    ``first``: stop at the first."""
    found = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(min(limit, 3000))   # deep recursion is RecursionError, not a C stack overflow
    arity = _arity(fn)
    try:
        for i, p in enumerate(probes):
            if p is None or (arity is not None and any(len(args) != arity for args, _ in p.cases)):
                continue
            if all(_run(fn, case, SLACK * used + FLOOR_LINES) is not None
                   for case, used in zip(p.cases, p.lines, strict=True)):
                found.append(i)
                if first:
                    break
    finally:
        sys.setrecursionlimit(limit)
    return found


def _arity(fn: Callable) -> int | None:
    """The number of positional arguments ``fn`` takes, None when it is not a plain function."""
    code = getattr(fn, "__code__", None)
    if code is None or code.co_flags & 0x0C or code.co_kwonlyargcount or getattr(fn, "__defaults__", None):
        return None   # *args / **kwargs / keyword-only / defaults: let the call decide
    return code.co_argcount


def _run(fn: Callable, case: Case, budget: int) -> int | None:
    """Lines ``fn`` ran to return the case's expected output; None: another output, an
    exception, or more than ``budget`` lines."""
    args, expected = case
    args = copy.deepcopy(args)   # outside the trace: only the reference's own lines count
    left = [budget]

    def tracer(frame, event, arg):
        if event == "line":
            left[0] -= 1
            if left[0] < 0:
                raise _OutOfTime
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        out = fn(*args)
    except BaseException:  # noqa: BLE001 - raising (or running out of lines) on these inputs differs
        return None
    finally:
        sys.settrace(old)
    return budget - left[0] if _same(out, expected) else None
