"""Akra-Bazzi: T(n) = sum_i a_i T(b_i n + h_i(n)) + g(n) with 0 < b_i < 1.

Then T(n) = Theta(n^p (1 + integral_1^n g(u) / u^(p+1) du)), where p solves
sum_i a_i b_i^p = 1 (Akra & Bazzi 1998; Leighton 1996 for the h_i = O(n / log^2 n)
perturbations that floors and ceilings are). The left side is strictly decreasing in p,
so a bracket is found by doubling and the root by ``scipy.optimize.brentq``. For
g(u) = u^k log^j u the integral has a closed form (``integral``), and its growth is:

    p < k:  Theta(n^(k-p) log^j n)   so T = Theta(n^k log^j n)
    p = k:  Theta(log^(j+1) n)       so T = Theta(n^k log^(j+1) n)
    p > k:  converges to a constant  so T = Theta(n^p)
"""

from __future__ import annotations

import math

from scipy.optimize import brentq

from koda.analysis.symbolic import Undecided

P_TOL = 1e-9  # |p - k| below this counts as p = k (the root is found to ~1e-12)


def exponent(a: list[float], b: list[float]) -> float:
    """The p with sum a_i b_i^p = 1; all a_i > 0 and 0 < b_i < 1."""
    if not a or any(x <= 0 for x in a) or any(not 0 < y < 1 for y in b):
        raise Undecided("Akra-Bazzi needs a_i > 0 and 0 < b_i < 1")
    f = lambda p: sum(ai * bi**p for ai, bi in zip(a, b, strict=True)) - 1.0
    lo, hi = -1.0, 1.0
    while f(lo) < 0:  # f decreases in p: move lo left until f(lo) >= 0
        lo *= 2
    while f(hi) > 0:
        hi *= 2
    if f(lo) == 0:
        return lo
    p = brentq(f, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=200)
    return float(round(p)) if abs(p - round(p)) < P_TOL else float(p)


def integral(k: float, j: int, p: float, n: float) -> float:
    """Closed form of integral_1^n u^(k-p-1) (ln u)^j du, for integer j >= 0.

    With s = k - p != 0, repeated integration by parts gives
        n^s sum_{i=0}^{j} (-1)^i j!/(j-i)! (ln n)^(j-i) / s^(i+1)  -  (-1)^j j! / s^(j+1);
    with s = 0 it is (ln n)^(j+1) / (j+1).
    """
    if j < 0 or j != int(j):
        raise ValueError("closed form needs an integer log power j >= 0")
    s, ln = k - p, math.log(n)
    if abs(s) < P_TOL:
        return ln ** (j + 1) / (j + 1)
    head = sum((-1) ** i * math.perm(j, i) * ln ** (j - i) / s ** (i + 1) for i in range(j + 1))
    return n**s * head - (-1) ** j * math.factorial(j) / s ** (j + 1)


def solve(a: list[float], b: list[float], k: float, j: int) -> tuple[float, float, int]:
    """(p, n exponent, log exponent) of Theta(n^e log^l n) for g = n^k log^j n."""
    p = exponent(a, b)
    if abs(p - k) < P_TOL:
        return p, k, j + 1
    if p < k:
        return p, k, j
    return p, p, 0
