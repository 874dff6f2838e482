"""Solve an extracted recurrence into a Theta-bound, or say why it cannot be solved.

Divide-and-conquer recurrences (every call on b n with b < 1) go to Akra-Bazzi.
Subtract-and-conquer ones (every call on n - c) are linear recurrences with constant
coefficients: T(n) = sum_i a_i T(n - c_i) + g(n). With A = sum a_i:

- A = 1 (a single call T(n - c)): T(n) = Theta(n g(n)), the sum of g over n/c levels.
- A > 1: the characteristic polynomial x^d - sum_i a_i x^(d - c_i) has one positive root
  r > 1 (Descartes: one sign change), it dominates every other root in modulus, and a
  polynomial g cannot outgrow r^n: T(n) = Theta(r^n). T(n-1) + T(n-2) gives the golden
  ratio, 2T(n-1) gives 2.

Recurrences that mix both kinds (T(n-1) + T(n/2)) are undecided.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from koda.analysis import akra_bazzi
from koda.analysis.recurrence import Recurrence
from koda.analysis.symbolic import EPS, Undecided, polylog_text


@dataclass(frozen=True)
class Bound:
    kind: str  # "polylog" or "exponential"
    n_exponent: float = 0.0
    log_exponent: int = 0
    base: float = 1.0
    method: str = ""  # how it was derived, for the report

    def as_dict(self) -> dict:
        if self.kind == "exponential":
            return {"kind": "exponential", "base": self.base}
        return {"kind": "polylog", "n_exponent": self.n_exponent, "log_exponent": self.log_exponent}

    def text(self) -> str:
        if self.kind == "exponential":
            return f"Θ({self.base:.4g}^n)"
        return f"Θ({polylog_text(self.n_exponent, self.log_exponent)})"


def dominant_root(shifts: dict[int, float]) -> float:
    """Largest real root of x^d - sum a_c x^(d-c); ``shifts`` maps c -> a_c, all a_c > 0."""
    total = sum(shifts.values())
    f = lambda x: 1.0 - sum(a * x ** (-c) for c, a in shifts.items())  # char poly / x^d, increasing
    if total <= 1 + EPS:
        return 1.0
    root = brentq(f, 1.0, 1.0 + total, xtol=1e-14)
    d = max(shifts)
    coeffs = np.zeros(d + 1)
    coeffs[0] = 1.0
    for c, a in shifts.items():
        coeffs[c] -= a
    companion = max(abs(np.roots(coeffs)))  # every other root is no larger in modulus
    if abs(companion - root) > 1e-6 * root:
        raise Undecided(f"characteristic polynomial has a root of modulus {companion:.6g} above {root:.6g}")
    return float(f"{root:.12g}")  # 2.0000000000000018 -> 2.0


def solve(rec: Recurrence) -> Bound:
    """The Theta-bound of ``rec``; raises Undecided with the reason when there is none."""
    if not rec.calls:  # a function that does not recurse costs g(n)
        return Bound("polylog", rec.g.k, rec.g.j, method="not recursive: the body's work")
    divide = [c for c in rec.calls if c.divides]
    if divide and len(divide) < len(rec.calls):
        raise Undecided("mixes calls on n/b and on n-c; no closed form is applied")
    k, j = rec.g.k, rec.g.j
    if divide:
        groups = Counter(round(c.b, 12) for c in divide)
        p, e, lg = akra_bazzi.solve(list(map(float, groups.values())), list(groups), k, j)
        return Bound("polylog", e, lg, method=f"Akra-Bazzi, p = {p:.6g}")
    shifts: dict[int, float] = {}
    for c in rec.calls:
        step = -c.h
        if abs(step - round(step)) > EPS or round(step) < 1:
            raise Undecided(f"call on n{c.h:+g} does not shift n by a whole number")
        shifts[round(step)] = shifts.get(round(step), 0.0) + 1.0
    if sum(shifts.values()) == 1:
        return Bound("polylog", k + 1, j, method="one call on n - c: n levels of g")
    root = dominant_root(shifts)
    return Bound("exponential", base=root, method="characteristic polynomial")


def bound_value(bound: Bound, n: float) -> float:
    """The bound's function at n (constant 1), for comparing against measurements."""
    if bound.kind == "exponential":
        return bound.base**n
    return n**bound.n_exponent * max(math.log(n), 1e-12) ** bound.log_exponent
