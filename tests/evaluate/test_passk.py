"""The unbiased pass@k estimator against brute force over every k-subset of the samples."""

from itertools import combinations

import pytest

from koda.errors import KodaError
from koda.evaluate.passk import mean_pass_at_k, pass_at_k


def brute_force(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 12])
def test_estimator_equals_the_fraction_of_k_subsets_holding_a_pass(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_estimator_is_not_the_biased_plug_in():
    # 1 - (1 - c/n)^k would give 0.75 here; drawing 2 of 4 without replacement with 2 passing gives 5/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6, abs=1e-15)


def test_large_n_stays_exact():
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200, rel=1e-15)
    assert pass_at_k(1000, 999, 10) == 1.0 and pass_at_k(1000, 0, 10) == 0.0


def test_mean_needs_k_samples_on_every_task_and_checks_its_input():
    assert mean_pass_at_k([(5, 1), (5, 0)], 1) == pytest.approx(0.1)
    assert mean_pass_at_k([(5, 1), (3, 0)], 5) is None
    with pytest.raises(KodaError, match="needs 0 <= c <= n"):
        pass_at_k(3, 4, 1)
