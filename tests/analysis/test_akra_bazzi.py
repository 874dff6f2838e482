import math

import pytest
from scipy.integrate import quad

from koda.analysis import akra_bazzi
from koda.analysis.effects import Call
from koda.analysis.recurrence import Recurrence
from koda.analysis.solve import solve
from koda.analysis.symbolic import Growth, Undecided


def rec(calls, k, j=0):
    return Recurrence(tuple(Call(b, 0.0) for b in calls), Growth(k, j))


@pytest.mark.parametrize(
    ("name", "recurrence", "e", "lg"),
    [
        ("merge sort 2T(n/2)+n", rec([0.5, 0.5], 1), 1.0, 1),
        ("binary search T(n/2)+1", rec([0.5], 0), 0.0, 1),
        ("fast power T(n/2)+1", rec([0.5], 0), 0.0, 1),
        ("Karatsuba 3T(n/2)+n", rec([0.5] * 3, 1), math.log2(3), 0),
        ("Strassen 7T(n/2)+n^2", rec([0.5] * 7, 2), math.log2(7), 0),
        ("T(n/3)+T(2n/3)+n", rec([1 / 3, 2 / 3], 1), 1.0, 1),
        ("2T(n/2)+n^2", rec([0.5, 0.5], 2), 2.0, 0),
        ("4T(n/2)+n", rec([0.5] * 4, 1), 2.0, 0),
        ("2T(n/2)+n log n", rec([0.5, 0.5], 1, 1), 1.0, 2),
        ("T(n/2)+T(n/4)+1 (p = log2 golden ratio)", rec([0.5, 0.25], 0), math.log2((1 + 5**0.5) / 2), 0),
        ("T(n/5)+T(7n/10)+n (median of medians)", rec([0.2, 0.7], 1), 1.0, 0),
    ],
)
def test_textbook_recurrences(name, recurrence, e, lg):
    bound = solve(recurrence)
    assert bound.kind == "polylog"
    assert bound.n_exponent == pytest.approx(e, abs=1e-9), name
    assert bound.log_exponent == lg, name


def test_bound_texts():
    assert solve(rec([0.5, 0.5], 1)).text() == "Θ(n log n)"
    assert solve(rec([0.5], 0)).text() == "Θ(log n)"
    assert solve(rec([0.5] * 3, 1)).text() == "Θ(n^1.585)"
    assert solve(rec([0.5] * 7, 2)).text() == "Θ(n^2.807)"
    assert solve(rec([0.5] * 4, 1)).text() == "Θ(n^2)"


@pytest.mark.parametrize("a,b", [([2], [0.5]), ([3], [0.5]), ([1, 1], [1 / 3, 2 / 3]), ([1, 2], [0.3, 0.6])])
def test_exponent_solves_the_characteristic_equation(a, b):
    p = akra_bazzi.exponent(a, b)
    assert sum(x * y**p for x, y in zip(a, b, strict=True)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("k", "j", "p"),
    [(1, 0, 1), (1, 1, 1), (2, 0, 1), (2, 3, 1.2), (0, 2, 1.585), (1, 0, 2.807), (0.5, 1, 0.5), (3, 2, 0)],
)
def test_closed_form_integral_matches_quadrature(k, j, p):
    for n in (2.0, 10.0, 1000.0):
        numeric, _ = quad(lambda u: u ** (k - p - 1) * math.log(u) ** j, 1, n, limit=200)
        assert akra_bazzi.integral(k, j, p, n) == pytest.approx(numeric, rel=1e-8, abs=1e-10)


def test_invalid_coefficients_are_undecided():
    with pytest.raises(Undecided):
        akra_bazzi.exponent([1], [1.0])
    with pytest.raises(Undecided):
        akra_bazzi.exponent([], [])
