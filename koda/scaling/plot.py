"""The scaling plot: points, fitted segments, breakpoints, and the extrapolation dashed.

Built on ``matplotlib.figure.Figure`` (no pyplot), so no global backend is touched and the
Agg canvas renders it headless, as in ``koda.report.plots``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from koda.scaling.fit import PowerLawFit
from koda.scaling.points import Points

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
FIT_COLOR = "#222222"


def build_figure(fit: PowerLawFit, inputs: list[Points], predict: tuple[float, ...] = ()) -> Figure:
    """Log-log loss against compute. The fit is solid over the data's compute range and
    dashed outside it, up to the farthest `predict` value; predictions are hollow markers."""
    fig = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, points in enumerate(inputs):
        ax.scatter(points.compute, points.loss, s=14, color=COLORS[i % len(COLORS)], label=Path(points.source).name,
                   zorder=3)
    compute = np.concatenate([np.asarray(p.compute) for p in inputs])
    lo, hi = float(compute.min()), float(compute.max())
    inside = np.geomspace(lo, hi, 200)
    ax.plot(inside, fit.predict(inside), color=FIT_COLOR, lw=1.6, label=_label(fit))
    outside_lo, outside_hi = min([lo, *predict]), max([hi, *predict])
    if outside_hi > hi:
        grid = np.geomspace(hi, outside_hi, 50)
        ax.plot(grid, fit.predict(grid), color=FIT_COLOR, lw=1.4, ls="--", label="extrapolation")
    if outside_lo < lo:
        grid = np.geomspace(outside_lo, lo, 50)
        ax.plot(grid, fit.predict(grid), color=FIT_COLOR, lw=1.4, ls="--")
    for j, where in enumerate(fit.breakpoints):
        ax.axvline(where, color="#888888", lw=0.9, ls=":", label="breakpoint" if j == 0 else None)
    if predict:
        ax.scatter(predict, fit.predict(np.asarray(predict)), s=40, facecolors="none", edgecolors=FIT_COLOR,
                   zorder=4, label="prediction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"loss = a·C^(-b), {fit.k} breakpoint(s)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _label(fit: PowerLawFit) -> str:
    return "fit: b = " + ", ".join(f"{segment['b']:.3g}" for segment in fit.segments())


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path
