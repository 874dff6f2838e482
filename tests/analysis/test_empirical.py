"""Measurements run through the real sandbox: a few seconds each, so only four cases."""

import ast
import math

import pytest
import textbook as tb

from koda.analysis.report import verify_tree

PHI = (1 + 5**0.5) / 2


def verify(source, budget=1.5):
    return verify_tree(ast.parse(source), budget_s=budget)


@pytest.mark.parametrize(
    ("source", "bound"),
    [
        (tb.MERGE_SORT, {"kind": "polylog", "n_exponent": 1.0, "log_exponent": 1}),
        (tb.BINARY_SEARCH, {"kind": "polylog", "n_exponent": 0.0, "log_exponent": 1}),
        (tb.KARATSUBA, {"kind": "polylog", "n_exponent": math.log2(3), "log_exponent": 0}),
        (tb.HANOI, {"kind": "exponential", "base": 2.0}),
    ],
)
def test_static_and_measured_agree(source, bound):
    r = verify(source)
    assert r["bound"] == pytest.approx(bound) if "base" in bound else r["bound"] == bound
    emp = r["empirical"]
    assert emp["error"] is None and len(emp["points"]) >= 6
    assert emp["kind"] == bound["kind"]
    assert r["agree"] is True, r["agreement"]


def test_fibonacci_measures_the_golden_ratio():
    r = verify(tb.FIB)
    assert r["empirical"]["base"] == pytest.approx(PHI, rel=0.01)
    assert r["agree"] is True and r["bound_text"] == "Θ(1.618^n)"


def test_undecided_function_is_still_measured_but_never_agrees():
    r = verify(tb.QUICKSORT, budget=1.0)
    assert r["bound"] is None and r["undecided_reason"]
    assert r["empirical"]["kind"] == "polylog"  # random input: about n log n
    assert r["agree"] is False


def test_a_crashing_function_reports_the_error():
    src = "def f(n):\n    if n < 1:\n        return 0\n    return f(n - 1) + [0][n % 50 // 49]\n"
    r = verify(src, budget=1.0)
    assert r["bound_text"] == "Θ(n)"
    assert r["empirical"]["error"].startswith("IndexError at n=")  # any n >= 49 reaches f(49)
    assert r["empirical"]["points"] and all(p["n"] < 49 for p in r["empirical"]["points"])
