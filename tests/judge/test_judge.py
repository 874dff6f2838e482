"""The one judge: tests in the sandbox, syntax, and complexity, batched, verdicts in order."""

from koda.judge import Submission, judge
from koda.sandbox import SandboxPolicy, SandboxPool

FIB = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"
TESTS = "assert fib(10) == 55\nassert fib(3) == 2\n"
POLICY = SandboxPolicy(timeout_s=10.0, memory_mb=256, nproc=16)


def test_a_batch_gets_one_verdict_each_in_order():
    wrong = FIB.replace("fib(n - 2)", "fib(n - 2) + 1")
    broken = "def fib(n):\n    return (n +"
    subs = [Submission(wrong, TESTS, complexity=False), Submission(FIB, TESTS),
            Submission(broken, TESTS), Submission("x = 1\n", None)]
    with SandboxPool(workers=2, policy=POLICY) as pool:
        wrong_v, right_v, broken_v, none_v = judge(subs, pool=pool, budget_s=1.0, batch=3)
    assert not wrong_v.passed and (wrong_v.tests.passed, wrong_v.tests.total) == (0, 2)
    assert wrong_v.complexity is None                       # not asked for
    assert right_v.passed and right_v.syntax_ok
    assert right_v.complexity["bound"]["kind"] == "exponential" and right_v.complexity["agree"]
    assert not broken_v.syntax_ok and broken_v.tests.status == "syntax_error" and not broken_v.passed
    assert [t.status for t in broken_v.tests.tests] == ["syntax", "syntax"]
    assert broken_v.complexity["syntax_error"]
    assert none_v.tests is None and not none_v.passed and "no function" in none_v.complexity["error"]


def test_a_program_with_no_tests_never_counts_as_passed():
    with SandboxPool(workers=1, policy=POLICY) as pool:
        (v,) = judge([Submission(FIB, "x = 1\n", complexity=False)], pool=pool)
    assert v.tests.total == 0 and not v.passed
