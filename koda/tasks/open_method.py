"""Families whose prompts leave the method open: a naive and an efficient program both pass.

The default families name their method in the docstring ("one multiplication per step", "by
repeated squaring", "recursively", "bottom-up") and their tests are sized so that only that
method passes in time. Here the docstring says what to compute, not how, and the tests stay
small enough for the naive program, so passing the tests does not tell the two apart; the
target is the efficient bound, so only the growth check (the ``complexity`` reward, the
``complexity_met`` score) does. They measure whether the complexity reward moves a policy
toward the efficient program (docs/rl.md).

Not in the default task set (``koda.tasks.build.FAMILIES``): asked for by name, e.g.
``koda eval --families power_open,recurrence_open`` or ``rl.task_families``.

- ``power_open``: x^n mod m; one multiplication per call is Θ(n), squaring Θ(log n) (target).
- ``recurrence_open``: a linear recurrence's n-th term; the recursion read off the definition
  is exponential, the bottom-up loop Θ(n) (target).
"""

from __future__ import annotations

import random
import re

from koda.tasks.family import Draft, Family, indent, pick, polylog
from koda.tasks.numeric import _describe, _int_param, _recurrence, power_names, recurrence_loop_body, squaring_body


def power_open(rng: random.Random) -> Draft:
    mod, x, n, name = power_names(rng, ("power_mod", "mod_power", "pow_mod", "raise_mod"))
    # measured on the warm start (24 samples at temperature 0.8): this wording draws squaring 12
    # times and one multiplication per call 12; "... for an integer x and n >= 0." 3 / 21 (it reads
    # like power_naive's), "Compute x to the power n (>= 0), modulo m." 0 / 22
    doc = f"Return {x} ** {n} modulo {mod} ({n} >= 0)."
    cases = ((5, 0), (0, 0), (2, 10), (-3, 7), (12345, 300), (7, 501))    # within the naive recursion's depth
    return Draft(name, (x, n), doc, indent(squaring_body(name, x, n, mod)), cases, polylog(0, 1))


def recurrence_open(rng: random.Random) -> Draft:
    shifts, coeffs, first = _recurrence(rng)
    p = _int_param(rng)
    name = pick(rng, ("sequence_term", "recurrence_value", "nth_term", "term_of"))
    # the warm start writes the loop for 2 of 24 samples of this wording, 0 of 24 without "the sequence"
    doc = f"Return the {p}-th term ({p} >= 0) of the sequence {_describe(shifts, coeffs, first, 'a')}."
    cases = tuple((i,) for i in (0, len(first) - 1, len(first), 6, 11, 15))  # the naive recursion's reach
    return Draft(name, (p,), doc, indent(recurrence_loop_body(shifts, coeffs, first, p)), cases, polylog(1))


def naive_body(task) -> str:
    """The other program that passes an open-method task (a ``koda.tasks.schema.Task``): one
    multiplication per call for ``power_open``, the recursion read off the definition for
    ``recurrence_open``; a body indented four spaces, as ``canonical_solution``. It passes the
    tests and misses the target, so it is the half a both-ways warm start adds."""
    params = task.prompt.split(f"def {task.entry_point}(")[1].split(")")[0].split(", ")
    if task.family == "power_open":
        x, n = params
        m = re.search(r"modulo (\d+)", task.prompt).group(1)
        return indent(f"if {n} == 0:\n    return 1 % {m}\nreturn {x} * {task.entry_point}({x}, {n} - 1) % {m}\n")
    if task.family == "recurrence_open":
        (p,) = params
        first = re.search(r"vals = (\[.*?\])", task.canonical_solution).group(1)
        rule = re.search(r"vals\.append\((.*)\)", task.canonical_solution).group(1)
        call = re.sub(r"vals\[i - (\d+)\]", rf"{task.entry_point}({p} - \1)", rule)
        return indent(f"if {p} < len({first}):\n    return {first}[{p}]\nreturn {call}\n")
    raise ValueError(f"{task.task_id}: family {task.family!r} does not leave the method open")


FAMILIES = (
    Family("power_open", "recursive", power_open, "x^n mod m, method open (target: squaring)"),
    Family("recurrence_open", "iterative", recurrence_open, "linear recurrence, method open (target: linear)"),
)
