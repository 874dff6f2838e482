import math

import pytest

from koda.analysis.fit import consistent, select


def points(f, sizes):
    return [[n, f(n), 0, 0.0] for n in sizes]


POW2 = [2**k for k in range(1, 18)]


@pytest.mark.parametrize(
    ("f", "e", "lg"),
    [
        (lambda n: 5 * n * math.log2(n) + 3 * n, 1.0, 1),
        (lambda n: 4 * math.log2(n) + 2, 0.0, 1),
        (lambda n: 2 * n**2 + 10 * n, 2.0, 0),
        (lambda n: 3 * n ** math.log2(3), math.log2(3), 0),
        (lambda n: n * math.log2(n) ** 2, 1.0, 2),
    ],
)
def test_polylog_classes_are_recovered(f, e, lg):
    fit = select(points(f, POW2))
    assert fit.kind == "polylog" and fit.log_exponent == lg
    assert fit.n_exponent == pytest.approx(e, abs=0.06)


def test_exponential_is_told_apart_from_polynomials():
    fit = select(points(lambda n: 7 * 1.618**n + n, range(1, 30)))
    assert fit.kind == "exponential" and fit.base == pytest.approx(1.618, rel=0.01)
    assert select(points(lambda n: n**3, range(1, 30))).kind == "polylog"


def test_consistency_accepts_the_true_class_and_rejects_neighbours():
    pts = points(lambda n: 5 * n * math.log2(n) + 3 * n, POW2)
    assert consistent(pts, "polylog", 1.0, 1)[0]
    assert not consistent(pts, "polylog", 2.0, 0)[0]
    assert not consistent(pts, "polylog", 0.0, 1)[0]
    assert not consistent(pts, "exponential", base=2.0)[0]
    expo = points(lambda n: 2.0**n, range(1, 25))
    assert consistent(expo, "exponential", base=2.0)[0]
    assert not consistent(expo, "exponential", base=1.618)[0]
    assert not consistent(expo, "polylog", 3.0, 0)[0]


def test_too_few_points_is_no_fit():
    assert select([[2, 3, 0, 0], [4, 5, 0, 0], [8, 9, 0, 0]]) is None
    assert consistent([[2, 3, 0, 0]], "polylog", 1.0, 0) == (False, "too few measured points")


GEOMETRIC = sorted({round(1.3**i) for i in range(0, 52)})


@pytest.mark.parametrize(("f", "e", "lg"), [
    (lambda n: 3 * n + 7, 1.0, 0),
    (lambda n: 2 * n * math.log2(n) + n, 1.0, 1),
    (lambda n: n**2 + 5 * n, 2.0, 0),
    (lambda n: 5 * math.log2(n) + 1, 0.0, 1),
])
def test_a_log_factor_is_told_apart_at_the_measured_sizes(f, e, lg):
    """A free exponent absorbs a log factor (n and n log n both land within the exponent
    tolerance over these sizes); the claimed class must still beat its neighbours."""
    pts = points(f, GEOMETRIC)
    assert consistent(pts, "polylog", e, lg)[0]
    ok, why = consistent(pts, "polylog", e, lg + 1)
    assert not ok and (f"log^{lg} n fits as well or better" in why or "measured n exponent" in why)
    if lg:
        assert not consistent(pts, "polylog", e, lg - 1)[0]


def test_sizes_too_narrow_for_a_log_factor_are_refused_with_the_reason():
    pts = points(lambda n: n * math.log2(n), range(1000, 1600, 50))
    ok, why = consistent(pts, "polylog", 1.0, 1)
    assert not ok and "too narrow to tell a log factor apart" in why
