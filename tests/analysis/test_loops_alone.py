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
    # trip counts from integer functions, and counters doubled or squared against the bound
    ("import math\n\ndef f(n):\n    t = 0\n    for i in range(math.isqrt(n)):\n        t += i\n    return t\n",
     (0.5, 0)),
    ("def f(n):\n    t = 0\n    for i in range(1, n.bit_length(), 2):\n        t += i\n    return t\n", (0, 1)),
    ("import math\n\ndef f(n):\n    t = 0\n    for i in range(int(math.log2(n + 1))):\n        t += i\n"
     "    return t\n", (0, 1)),
    ("def f(n):\n    t, i = 0, 1\n    while i < n:\n        t += i\n        i *= 2\n    return t\n", (0, 1)),
    ("def f(n):\n    t, i = 0, 1\n    while i * i <= n:\n        t += i\n        i += 1\n    return t\n", (0.5, 0)),
    ("def f(xs):\n    t = 0\n    for i in range(len(xs[1:])):\n        for j in range(len(range(0, len(xs), 3))):\n"
     "            t += 1\n    return t\n", (2, 0)),
]


@pytest.mark.parametrize(("source", "bound"), CASES)
def test_the_bound_of_a_loop_is_derived_and_the_fit_agrees(source, bound):
    out = verify_source(source, budget_s=1.5)
    assert out["recurrence"].startswith("T(n) = Θ(") and out["method"].startswith("not recursive")
    assert (out["bound"]["n_exponent"], out["bound"]["log_exponent"]) == bound
    assert out["agree"], out["agreement"]


@pytest.mark.parametrize(("source", "reason"), [
    ("def f(n):\n    while n != 1:\n        n = 3 * n + 1 if n % 2 else n // 2\n    return n\n", "while loop"),
    ("import math\n\ndef f(n):\n    for i in range(int(math.log2(math.log2(n + 2)))):\n        pass\n",
     "log log n"),
    ("def f(n):\n    i = 0\n    while i < n:\n        i *= 2\n    return i\n", "while loop"),
])
def test_what_stays_undecided_says_why(source, reason):
    out = verify_source(source, measure=False)
    assert out["bound"] is None and reason in out["undecided_reason"]
