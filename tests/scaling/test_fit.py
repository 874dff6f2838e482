"""The piecewise power-law fit: known breakpoints and slopes come back, K=0 is plain least
squares in log-log, BIC finds the true K, extrapolation follows the end segment."""

import numpy as np
import pytest

from koda.errors import KodaError
from koda.scaling.fit import fit, select

X = np.linspace(15.0, 19.0, 40)     # log10 of compute: 1e15 .. 1e19 FLOPs


def curve(x, intercept, slopes, breakpoints):
    """log10 loss of a continuous piecewise line, written independently of the module."""
    y = intercept + slopes[0] * x
    for t, before, after in zip(breakpoints, slopes[:-1], slopes[1:], strict=True):
        y = y + (after - before) * np.maximum(0.0, x - t)
    return y


def points(intercept, slopes, breakpoints, noise=0.0, seed=0):
    y = curve(X, intercept, slopes, breakpoints) + np.random.default_rng(seed).normal(0.0, noise, X.size)
    return 10.0**X, 10.0**y


@pytest.mark.parametrize("seed", [0, 1])
def test_one_breakpoint_is_recovered_from_noisy_points(seed):
    # tolerance: breakpoint within 0.1 decade of compute, slopes within 0.01 (noise 0.5% of loss)
    compute, loss = points(2.0, [-0.04, -0.15], [16.4], noise=0.002, seed=seed)
    result = fit(compute, loss, breakpoints=1)
    assert result.k == 1
    assert abs(result.breakpoints_log[0] - 16.4) < 0.1
    np.testing.assert_allclose(result.slopes, [-0.04, -0.15], atol=0.01)
    left, right = result.predict([10**16.4 * 0.999999, 10**16.4 * 1.000001])
    assert abs(left - right) < 1e-5 * left       # continuous: no jump at the breakpoint


@pytest.mark.parametrize("seed", [0, 1])
def test_two_breakpoints_are_recovered_from_noisy_points(seed):
    compute, loss = points(2.0, [-0.05, -0.2, -0.08], [16.2, 17.7], noise=0.002, seed=seed)
    result = fit(compute, loss, breakpoints=2)
    np.testing.assert_allclose(result.breakpoints_log, [16.2, 17.7], atol=0.1)
    np.testing.assert_allclose(result.slopes, [-0.05, -0.2, -0.08], atol=0.015)
    # per-segment a, b describe the same curve: L = a * C^(-b) on each segment
    for segment, c in zip(result.segments(), [10**15.5, 10**17.0, 10**18.5], strict=True):
        assert segment["a"] * c ** (-segment["b"]) == pytest.approx(float(result.predict(c)), rel=1e-9)


def test_no_breakpoint_is_ordinary_least_squares_in_log_log():
    compute, loss = points(1.3, [-0.07], [], noise=0.01, seed=3)
    slope, intercept = np.polyfit(np.log10(compute), np.log10(loss), 1)
    result = fit(compute, loss, breakpoints=0)
    assert result.slopes[0] == pytest.approx(slope, abs=1e-10)
    assert result.intercept == pytest.approx(intercept, abs=1e-9)
    (segment,) = result.segments()
    assert segment["b"] == pytest.approx(-slope, abs=1e-10)
    assert segment["a"] == pytest.approx(10**intercept, rel=1e-9)


@pytest.mark.parametrize("true_k, slopes, breakpoints", [
    (0, [-0.08], []),
    (1, [-0.04, -0.15], [16.4]),
    (2, [-0.05, -0.2, -0.08], [16.2, 17.7]),
])
def test_bic_picks_the_true_number_of_breakpoints_on_clean_data(true_k, slopes, breakpoints):
    compute, loss = points(2.0, slopes, breakpoints)
    best, bics = select(compute, loss, max_k=3)
    assert set(bics) == {0, 1, 2, 3}
    assert best.k == true_k


def test_extrapolation_follows_the_last_segment():
    compute, loss = points(2.0, [-0.04, -0.15], [16.4], noise=0.001)
    result = fit(compute, loss, breakpoints=1)
    c_last, s_last = result.segment_lines()[-1]
    assert float(result.predict(1e21)) == pytest.approx(10 ** (c_last + s_last * 21.0), rel=1e-12)
    # and not the first segment's line, which is far flatter
    c_first, s_first = result.segment_lines()[0]
    assert float(result.predict(1e21)) < 0.8 * 10 ** (c_first + s_first * 21.0)


def test_bad_points_are_one_line_errors():
    with pytest.raises(KodaError, match="compute must be positive") as err:
        fit([1e15, 0.0, 1e17], [3.0, 2.5, 2.0])
    assert "\n" not in str(err.value)
    with pytest.raises(KodaError, match="loss must be positive"):
        fit([1e15, 1e16, 1e17], [3.0, -1.0, 2.0])
    with pytest.raises(KodaError, match="5 points are fewer than the 6 parameters"):
        fit(np.geomspace(1e15, 1e18, 5), np.linspace(3, 2, 5), breakpoints=2)
    with pytest.raises(KodaError, match="same compute"):
        fit([1e15, 1e15, 1e15], [3.0, 2.9, 2.8])


def test_segments_count_distinct_compute_values():
    # two runs of one batch and model give the same compute at the same steps
    x = np.repeat(np.linspace(15.0, 18.0, 12), 2)
    y = curve(x, 2.0, [-0.05, -0.15], [16.5]) + np.tile([0.001, -0.001], 12)
    result = fit(10.0**x, 10.0**y, breakpoints=1)
    assert abs(result.breakpoints_log[0] - 16.5) < 0.05
    # 8 points but 4 distinct compute values: 3 segments cannot each have 2
    x4 = np.repeat([15.0, 16.0, 17.0, 18.0], 2)
    with pytest.raises(KodaError, match="distinct compute values: 4"):
        fit(10.0**x4, 10.0 ** (2.0 - 0.1 * x4), breakpoints=2)
