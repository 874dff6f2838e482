import math

import pytest

from koda.analysis.effects import Call
from koda.analysis.recurrence import Recurrence
from koda.analysis.solve import dominant_root, solve
from koda.analysis.symbolic import Growth, Undecided

PHI = (1 + math.sqrt(5)) / 2


def sub(shifts, k=0.0, j=0):
    return Recurrence(tuple(Call(1.0, -float(c)) for c in shifts), Growth(k, j))


def test_fibonacci_is_golden_ratio_to_the_n():
    bound = solve(sub([1, 2]))
    assert bound.kind == "exponential" and bound.base == pytest.approx(PHI, rel=1e-12)
    assert bound.text() == "Θ(1.618^n)"


def test_hanoi_is_two_to_the_n_whatever_the_polynomial_work():
    assert solve(sub([1, 1])).base == 2.0
    assert solve(sub([1, 1], k=3)).base == 2.0
    assert solve(sub([1, 1])).text() == "Θ(2^n)"


@pytest.mark.parametrize(
    ("shifts", "k", "j", "e", "lg"),
    [([1], 0, 0, 1.0, 0), ([1], 1, 0, 2.0, 0), ([2], 0, 0, 1.0, 0), ([1], 1, 1, 2.0, 1)],
)
def test_single_subtraction_sums_g_over_n_levels(shifts, k, j, e, lg):
    bound = solve(sub(shifts, k, j))
    assert (bound.kind, bound.n_exponent, bound.log_exponent) == ("polylog", e, lg)


def test_tribonacci_and_three_calls():
    # x^3 = x^2 + x + 1 has the tribonacci constant as its real root
    assert solve(sub([1, 2, 3])).base == pytest.approx(1.839286755214161, rel=1e-10)
    assert solve(sub([1, 1, 1])).base == pytest.approx(3.0)
    assert dominant_root({1: 1.0, 2: 1.0}) == pytest.approx(PHI)


def test_mixed_and_fractional_shifts_are_undecided():
    with pytest.raises(Undecided, match="mixes"):
        solve(Recurrence((Call(1.0, -1.0), Call(0.5, 0.0)), Growth()))
    with pytest.raises(Undecided):
        solve(Recurrence((Call(1.0, -0.5),), Growth()))

def test_no_recursive_call_is_the_bodys_work():
    bound = solve(Recurrence((), Growth(2.0, 1)))
    assert (bound.kind, bound.n_exponent, bound.log_exponent) == ("polylog", 2.0, 1)
    assert bound.method.startswith("not recursive")
