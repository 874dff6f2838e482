"""Functions that do not recurse: T(n) is the body's work, derived and measured like any other."""

import pytest

from koda.analysis.report import verify_source

CASES = [
    ("def f(n):\n    t = 0\n    for i in range(3, n + 1):\n        t += 2 * i ** 2\n    return t\n", (1, 0)),
    ("def f(xs):\n    out = []\n    for i in range(len(xs)):\n        for j in range(len(xs)):\n"
     "            out.append(xs[i] - xs[j])\n    return out\n", (2, 0)),
    ("def f(n):\n    c = 0\n    while n > 0:\n        c += n % 7 == 3\n        n //= 7\n    return c\n", (0, 1)),
    ("def f(n):\n    out = 0\n    while n > 0:\n        out = (out << 3) | (n & 7)\n        n >>= 3\n    return out\n",
     (0, 1)),
    ("def f(x, n):\n    r = 1\n    for _ in range(n):\n        r = r * x % 97\n    return r\n", (1, 0)),
    ("def f(xs):\n    return sorted(xs)[::-1]\n", (1, 1)),
]


@pytest.mark.parametrize(("source", "bound"), CASES)
def test_the_bound_of_a_loop_is_derived_and_the_fit_agrees(source, bound):
    out = verify_source(source, budget_s=1.5)
    assert out["recurrence"].startswith("T(n) = Θ(") and out["method"].startswith("not recursive")
    assert (out["bound"]["n_exponent"], out["bound"]["log_exponent"]) == bound
    assert out["agree"], out["agreement"]


def test_a_loop_with_no_size_to_read_stays_undecided_with_a_reason():
    out = verify_source("def f(n):\n    while n != 1:\n        n = 3 * n + 1 if n % 2 else n // 2\n    return n\n",
                        measure=False)
    assert out["bound"] is None and out["undecided_reason"]
