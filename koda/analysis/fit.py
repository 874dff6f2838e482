"""Fit a growth class to measured operation counts.

Candidates are n^a log^b n with b in {0, 1, 2} and a fitted freely, and c^n with c fitted,
all by least squares in log space (log ops = const + a ln n + b ln ln n, or const + n ln c).
Lower-order terms bend small sizes, so only the largest ``KEEP`` points are used, and of
those only n >= 16 (else n >= 8) when enough remain. The model with the smallest RMS
residual wins, except that a larger log power must cut the residual by ``PARSIMONY`` to
beat a smaller one: with a free, n^1.07 and n log n both fit a short range, and the
simpler class is preferred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KEEP = 10
PARSIMONY = 1.5
EXP_TOL = 0.1  # |measured - derived| n exponent; lower-order terms shift short ranges ~0.05
RMS_SLACK = 0.01
BASE_TOL = 0.05
LOG_SPAN = 1.5  # ln n_max / ln n_min the fitted sizes must span to tell n^a from n^a log n


@dataclass(frozen=True)
class Fit:
    kind: str  # "polylog" or "exponential"
    n_exponent: float = 0.0
    log_exponent: int = 0
    base: float = 1.0
    rms: float = 0.0  # residual of ln(ops), i.e. a typical relative error
    used: int = 0  # points the fit used

    def as_dict(self) -> dict:
        core = {"kind": "exponential", "base": round(self.base, 4)} if self.kind == "exponential" else {
            "kind": "polylog", "n_exponent": round(self.n_exponent, 4), "log_exponent": self.log_exponent}
        return core | {"rms_log_residual": round(self.rms, 5), "points_used": self.used}


def _lstsq(columns: list[np.ndarray], target: np.ndarray) -> tuple[np.ndarray, float]:
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    return coef, float(np.sqrt(np.mean(resid**2)))


def candidates(n: np.ndarray, ops: np.ndarray) -> list[Fit]:
    """Every candidate class fitted to (n, ops); n > 1, ops > 0."""
    y, ones, ln = np.log(ops), np.ones_like(n), np.log(n)
    fits = []
    for b in (0, 1, 2):
        coef, rms = _lstsq([ones, ln], y - b * np.log(ln))
        fits.append(Fit("polylog", float(coef[1]), b, rms=rms, used=len(n)))
    coef, rms = _lstsq([ones, n], y)
    fits.append(Fit("exponential", base=float(math.exp(coef[1])), rms=rms, used=len(n)))
    return fits


def select(points: list[list[float]]) -> Fit | None:
    """The best class for points [n, ops, ...]; None when fewer than 4 usable points."""
    pts = sorted((p[0], p[1]) for p in points if p[0] >= 2 and p[1] > 0)
    use = pts
    for floor, need in ((16, 5), (8, 4)):
        big = [p for p in pts if p[0] >= floor]
        if len(big) >= need:
            use = big
            break
    use = use[-KEEP:]
    if len(use) < 4:
        return None
    n, ops = (np.array(c, dtype=float) for c in zip(*use, strict=True))
    fits = candidates(n, ops)
    best = fits[0]
    for f in fits[1:3]:  # more log factors only when they clearly fit better
        if f.rms * PARSIMONY < best.rms:
            best = f
    expo = fits[3]
    if expo.rms * PARSIMONY < best.rms and expo.base > 1.01:
        best = expo
    return best


def consistent(points: list[list[float]], kind: str, n_exponent: float = 0.0, log_exponent: int = 0,
               base: float = 1.0, best: Fit | None = None) -> tuple[bool, str]:
    """Whether the measurements fit the class n^e log^j n (or base^n), and why (not).

    Polylog: with the log power fixed at j, the fitted n exponent must be within
    ``EXP_TOL`` of e and its residual within twice the best class's (plus ``RMS_SLACK``);
    then, with the exponent pinned at e, log^j n must fit better than log^(j±1) n
    (``log_factor``).
    Exponential: the fitted base must be within ``BASE_TOL`` (relative) of the bound's.
    """
    best = best or select(points)
    if best is None:
        return False, "too few measured points"
    if kind == "exponential":
        if best.kind != "exponential":
            return False, f"measured growth is polynomial (n^{best.n_exponent:.2f}), not {base:.4g}^n"
        ok = abs(best.base - base) <= BASE_TOL * base
        return ok, f"measured base {best.base:.4f} vs {base:.4f}"
    if best.kind == "exponential":
        return False, f"measured growth is exponential ({best.base:.3f}^n)"
    pts = sorted((p[0], p[1]) for p in points if p[0] >= 2 and p[1] > 0)[-best.used:]
    n, ops = (np.array(c, dtype=float) for c in zip(*pts, strict=True))
    fixed = candidates(n, ops)[min(log_exponent, 2)] if log_exponent <= 2 else None
    if fixed is None:
        return False, f"log power {log_exponent} is beyond the fitted classes"
    ok = abs(fixed.n_exponent - n_exponent) <= EXP_TOL and fixed.rms <= 2 * best.rms + RMS_SLACK
    why = (f"with log^{log_exponent} n fixed, measured n exponent {fixed.n_exponent:.3f} "
           f"vs {n_exponent:.3f} (residual {fixed.rms:.4f}, best {best.rms:.4f})")
    if not ok:
        return ok, why
    # every size from 16 up, not only the largest KEEP: the log factor shows over a wide range
    wide = [p for p in sorted((p[0], p[1]) for p in points if p[1] > 0) if p[0] >= 16]
    n, ops = (np.array(c, dtype=float) for c in zip(*(wide if len(wide) >= 4 else pts), strict=True))
    return log_factor(n, ops, n_exponent, log_exponent, why)


def _pinned_rms(n: np.ndarray, ops: np.ndarray, e: float, j: int) -> float:
    """Relative residual of ops against a * n^e log^j n + b, a and b fitted (weighted least
    squares): the additive constant soaks up set-up work that a log-space fit cannot."""
    f = n**e * np.log(n) ** j
    design = np.stack([f / ops, 1.0 / ops], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.ones_like(ops), rcond=None)
    if coef[0] <= 0:
        return math.inf
    return float(np.sqrt(np.mean((design @ coef - 1.0) ** 2)))


def log_factor(n: np.ndarray, ops: np.ndarray, e: float, j: int, why: str) -> tuple[bool, str]:
    """Tell n^e log^j n from its neighbours n^e log^(j±1) n, the exponent pinned at e.

    Over a range [n0, n1] a log factor bends the log-log slope by only about 1/ln n, less
    than ``EXP_TOL``, so a free exponent absorbs it: n and n log n both pass the exponent
    test. With the exponent pinned, the claimed class must fit strictly better than both
    neighbours, and the sizes must span ln n1 / ln n0 >= ``LOG_SPAN`` (else the log factor
    changes too little to see, and the budget must grow)."""
    span = math.log(n.max()) / math.log(n.min())
    if span < LOG_SPAN:
        return False, (f"sizes {n.min():.0f}..{n.max():.0f} too narrow to tell a log factor apart "
                       f"(ln ratio {span:.2f} < {LOG_SPAN}); measure longer")
    mine = _pinned_rms(n, ops, e, j)
    rivals = [other for other in (j - 1, j + 1) if other >= 0]
    for other in rivals:
        if _pinned_rms(n, ops, e, other) <= mine:
            return False, (f"{why}; but with n^{e:g} pinned, log^{other} n fits as well or better "
                           f"(residual {_pinned_rms(n, ops, e, other):.4f} vs {mine:.4f})")
    beaten = " and ".join(f"log^{other} n" for other in rivals)
    return True, f"{why}; log^{j} n beats {beaten} with n^{e:g} pinned"
