"""Power-law fit of loss against training compute, with searched breakpoints.

A scaling curve ``L = a · C^(-b)`` is a straight line in log-log space; real curves bend
(a warm-up phase, a data-limited tail), so the model here is a *continuous* piecewise line
in ``x = log10 C``, ``y = log10 L`` with K breakpoints ``t_1 < ... < t_K``::

    y = β0 + β1·x + Σ_k γ_k · max(0, x - t_k)

For fixed breakpoints this is linear in β, γ (ordinary least squares); the breakpoints are
found by a grid search over every admissible combination (batched normal equations), and
the best few are refined by Nelder-Mead on the residual sum of squares. Continuity is built
into the basis, so a breakpoint never opens a jump. Each segment must hold at least
``min_segment_points`` distinct compute values, else its slope would rest on one or none.

``select`` picks K by the Bayesian information criterion, ``n·ln(RSS/n) + p·ln n`` with
``p = 2 + 2K`` (two line parameters, then a slope change and a position per breakpoint).
RSS/n is floored at 1e-12 of the variance of y, so on noise-free data every K that fits
exactly ties and the penalty picks the smallest.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from koda.errors import KodaError

GRID_BUDGET = 20_000      # breakpoint combinations evaluated in the grid search
REFINE_STARTS = 2         # best grid combinations refined by Nelder-Mead
_CHUNK = 2_000            # combinations per batched solve (bounds memory: chunk x n x p floats)


def n_params(breakpoints: int) -> int:
    return 2 + 2 * breakpoints


@dataclass(frozen=True)
class PowerLawFit:
    """A continuous piecewise power law. Slopes are d log L / d log C per segment (the
    exponent b of segment j is ``-slopes[j]``); breakpoints are log10 of compute."""

    breakpoints_log: tuple[float, ...]   # K sorted log10(C) positions
    intercept: float                     # β0: log10 L of the first segment's line at C = 1
    slopes: tuple[float, ...]            # K + 1 slopes, first segment first
    rss: float                           # residual sum of squares in log10 L
    n_points: int
    bic: float

    @property
    def k(self) -> int:
        return len(self.breakpoints_log)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        """Breakpoint positions in compute (FLOPs)."""
        return tuple(10.0 ** t for t in self.breakpoints_log)

    def segment_lines(self) -> list[tuple[float, float]]:
        """(intercept, slope) in log10 space per segment: y = c_j + s_j·x on segment j."""
        lines, c = [(self.intercept, self.slopes[0])], self.intercept
        for t, before, after in zip(self.breakpoints_log, self.slopes[:-1], self.slopes[1:], strict=True):
            c += (before - after) * t          # keeps the line continuous at t
            lines.append((c, after))
        return lines

    def segments(self) -> list[dict]:
        """Per segment: its compute range (None where unbounded) and L = a·C^(-b) on it."""
        edges = [None, *self.breakpoints, None]
        return [{"from_compute": lo, "to_compute": hi, "a": 10.0 ** c, "b": -s}
                for (c, s), lo, hi in zip(self.segment_lines(), edges, edges[1:], strict=False)]

    def predict(self, compute) -> np.ndarray:
        """Loss at `compute` (scalar or [M]); beyond the data the end segments extend."""
        x = np.log10(np.asarray(compute, dtype=float))
        return 10.0 ** _evaluate(x, self.intercept, self.slopes, self.breakpoints_log)


def _evaluate(x: np.ndarray, intercept: float, slopes, breakpoints) -> np.ndarray:
    y = intercept + slopes[0] * x
    for t, before, after in zip(breakpoints, slopes[:-1], slopes[1:], strict=True):
        y = y + (after - before) * np.maximum(0.0, x - t)
    return y


def _check_points(compute, loss) -> tuple[np.ndarray, np.ndarray]:
    c, v = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.ndim != 1 or c.shape != v.shape:
        raise KodaError(f"compute and loss must be two lists of equal length, got shapes {c.shape} and {v.shape}")
    for name, values in (("compute", c), ("loss", v)):
        bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
        if bad.size:
            raise KodaError(f"{name} must be positive and finite for a log-log fit: point {bad[0]} has "
                            f"{name} {values[bad[0]]!r}")
    order = np.argsort(c, kind="stable")
    return np.log10(c[order]), np.log10(v[order])


def _bic(rss: float, n: int, k: int, y: np.ndarray) -> float:
    floor = 1e-12 * max(float(np.var(y)), 1e-300)
    return n * math.log(max(rss / n, floor)) + n_params(k) * math.log(n)


def _admissible(x: np.ndarray, t: np.ndarray, min_points: int) -> bool:
    """t sorted, each of the K + 1 segments holding >= min_points of the sorted distinct
    compute values x (distinct, so the segment's slope is determined: full-rank design)."""
    edges = [0, *np.searchsorted(x, t, side="right").tolist(), len(x)]
    return all(t[i] < t[i + 1] for i in range(len(t) - 1)) and all(
        b - a >= min_points for a, b in zip(edges[:-1], edges[1:], strict=True))


def _design(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x: [n], t: [..., K] -> [..., n, 2 + K]: columns 1, x, max(0, x - t_k)."""
    hinge = np.maximum(0.0, x[:, None] - t[..., None, :])            # [..., n, K]
    if t.ndim == 1:
        return np.column_stack([np.ones_like(x), x, hinge])
    lead = np.broadcast_to(np.stack([np.ones_like(x), x], axis=-1), hinge.shape[:-1] + (2,))
    return np.concatenate([lead, hinge], axis=-1)


def _solve(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float]:
    design = _design(x, t)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return coef, float(resid @ resid)


def _grid_rss(x: np.ndarray, y: np.ndarray, combos: np.ndarray) -> np.ndarray:
    """RSS for each row of combos [M, K], through batched normal equations in centred x."""
    mean, scale = x.mean(), max(float(x.std()), 1e-12)
    xs, out = (x - mean) / scale, np.empty(len(combos))
    for start in range(0, len(combos), _CHUNK):
        ts = (combos[start:start + _CHUNK] - mean) / scale
        design = _design(xs, ts)                                     # [m, n, p]
        gram = design.transpose(0, 2, 1) @ design                    # [m, p, p]
        rhs = design.transpose(0, 2, 1) @ y                          # [m, p]
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
        resid = y - (design @ coef[..., None])[..., 0]
        out[start:start + _CHUNK] = np.einsum("mn,mn->m", resid, resid)
    return out


def _candidates(x: np.ndarray, k: int, min_points: int) -> np.ndarray:
    """Admissible breakpoint combinations [M, K] from an even grid over the data range,
    as fine as GRID_BUDGET combinations allow."""
    size = 8
    while size < 2000 and math.comb(size + 1, k) <= GRID_BUDGET:
        size += 1
    grid = np.linspace(x[0], x[-1], size + 2)[1:-1]
    combos = np.array(list(itertools.combinations(grid, k)))              # [M, K], rows increasing
    below = np.searchsorted(x, combos, side="right")                      # [M, K] points <= t_k
    edges = np.concatenate([np.zeros((len(combos), 1), int), below, np.full((len(combos), 1), len(x))], axis=1)
    return combos[np.all(np.diff(edges, axis=1) >= min_points, axis=1)]


def fit(compute, loss, breakpoints: int = 0, min_segment_points: int = 2) -> PowerLawFit:
    """Least-squares fit of log10 L against log10 C with `breakpoints` searched breakpoints.

    compute, loss: [n] positive values. Raises KodaError on non-positive values, too few
    points for the parameters, or too few points to give every segment min_segment_points.
    """
    x, y = _check_points(compute, loss)
    n, k = len(x), breakpoints
    if not isinstance(k, int) or k < 0:
        raise KodaError(f"breakpoints must be a non-negative integer, got {k!r}")
    if n < n_params(k):
        raise KodaError(f"{n} points are fewer than the {n_params(k)} parameters of a fit with {k} breakpoint(s)")
    if len(np.unique(x)) < 2:
        raise KodaError("all points have the same compute: a slope cannot be fitted")
    if k == 0:
        coef, rss = _solve(x, y, np.empty(0))
        return PowerLawFit((), float(coef[0]), (float(coef[1]),), rss, n, _bic(rss, n, 0, y))
    distinct = np.unique(x)
    combos = _candidates(distinct, k, min_segment_points)
    if not len(combos):
        raise KodaError(f"{n} points cannot give each of the {k + 1} segments {min_segment_points} points "
                        f"(distinct compute values: {len(distinct)})")
    rss = _grid_rss(x, y, combos)
    best_t, best_rss = combos[int(np.argmin(rss))], float(rss.min())

    def objective(t: np.ndarray) -> float:
        t = np.sort(t)
        return _solve(x, y, t)[1] if _admissible(distinct, t, min_segment_points) else math.inf

    for start in combos[np.argsort(rss)[:REFINE_STARTS]]:
        result = minimize(objective, start, method="Nelder-Mead",   # x: 1e-5 decade; f: relative to the grid's best
                          options={"xatol": 1e-5, "fatol": max(1e-9 * best_rss, 1e-30), "maxiter": 200 * k})
        if result.fun < best_rss:
            best_t, best_rss = np.sort(result.x), float(result.fun)
    coef, rss_final = _solve(x, y, best_t)
    slopes = np.cumsum(coef[1:])                     # β1, β1 + γ1, β1 + γ1 + γ2, ...
    return PowerLawFit(tuple(float(t) for t in best_t), float(coef[0]), tuple(float(s) for s in slopes),
                       rss_final, n, _bic(rss_final, n, k, y))


def max_breakpoints(n: int, min_segment_points: int = 2, cap: int = 3) -> int:
    """The most breakpoints `n` points support with one point to spare over the parameters."""
    k = 0
    while k < cap and n > n_params(k + 1) and n >= min_segment_points * (k + 2):
        k += 1
    return k


def select(compute, loss, max_k: int = 3, min_segment_points: int = 2) -> tuple[PowerLawFit, dict[int, float]]:
    """Fits with K = 0 .. max_k (as far as the points allow); returns the one of least BIC
    and every K's BIC. A K the points cannot support is left out, not an error."""
    n = len(np.asarray(compute))
    if n < n_params(0) + 1:
        raise KodaError(f"{n} points are too few to choose breakpoints (at least {n_params(0) + 1} needed)")
    fits: dict[int, PowerLawFit] = {}
    for k in range(min(max_k, max_breakpoints(n, min_segment_points, cap=max_k)) + 1):
        try:
            fits[k] = fit(compute, loss, k, min_segment_points)
        except KodaError:
            if k == 0:
                raise
            break
    best = min(fits.values(), key=lambda f: (f.bic, f.k))
    return best, {k: f.bic for k, f in fits.items()}
