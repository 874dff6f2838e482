"""``--verify`` against the real judges: the sandbox runs the tests, the verifier reads the code."""

from koda.infer.verify import missing_judges, verify_program

FIB = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"


def test_a_correct_recursive_sample_passes_and_gets_its_bound():
    assert missing_judges() == []
    result = verify_program(FIB, "assert fib(10) == 55\nassert fib(3) == 3\n", budget_s=1.0)
    assert (result["tests"]["passed"], result["tests"]["total"]) == (1, 2)
    assert result["complexity"]["function"] == "fib" and result["complexity"]["bound"]["kind"] == "exponential"


def test_broken_samples_are_results_not_errors():
    cut_off = verify_program("def f(x):\n    return (x +", "assert f(1) == 2\n", measure=False)
    assert cut_off["tests"]["status"] == "syntax_error" and cut_off["complexity"]["syntax_error"]
    no_function = verify_program("x = 1\n", None, measure=False)
    assert no_function["tests"] is None and "no function" in no_function["complexity"]["error"]
