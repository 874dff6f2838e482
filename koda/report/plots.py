"""Figures of one or more runs: each run one colour, the same axes for every run.

Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
global backend or figure registry is touched, so a report is headless on any machine (Agg
renders on save) and building figures inside a test or another program leaks nothing.
``build_plots`` returns figures (tests inspect their lines); ``save_plot`` writes a PNG.

A fixed set of plots covers the names ``koda/run/metrics.py`` documents; every other
scalar metric is drawn generically, one figure per top-level group (``rl/``, ``gan/``, the
remaining ``train/`` terms, ...), so later stages show up without a change here.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from koda.report.runs import Run

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")
LAYER_LOAD = re.compile(r"moe/layer(\d+)/load_max_min$")
LAYER_TOKENS = re.compile(r"moe/layer(\d+)/tokens$")
GROUP_TITLES = {"rl": "Reward components (rl/)", "gan": "Adversarial terms (gan/)"}
MAX_PANELS = 32          # the large preset's layer count; more stop being readable on one page
DPI = 110


@dataclass(frozen=True)
class Plot:
    name: str        # file stem: the PNG is <name>.png
    title: str       # caption on the HTML page
    figure: Figure


def _panels(n: int, max_cols: int = 4, size: tuple[float, float] = (4.4, 3.1), over_steps: bool = True):
    """A figure with n axes in a grid, sharing the step axis when `over_steps`; one panel
    gets a wider figure of its own."""
    if n == 1:
        fig = Figure(figsize=(8.0, 4.2), layout="constrained")
        return fig, [fig.add_subplot()]
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False, sharex=over_steps)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.remove()
    if over_steps:
        fig.supxlabel("step")
    return fig, axes[:n]


def _label(run: Run, what: str, multi_run: bool) -> str:
    return f"{run.name} {what}".strip() if multi_run else what


def _draw(ax, runs: list[Run], key: str, what: str = "", style: str = "-", scale: float = 1.0) -> list[float]:
    """One line per run holding `key`, in the run's colour; returns the values drawn.

    Sparse series (validation every eval_every steps) get markers so single points show.
    """
    drawn: list[float] = []
    for index, run in enumerate(runs):
        series = run.scalars.get(key)
        if series is None:
            continue
        values = [v * scale for v in series.values]
        ax.plot(series.steps, values, style, color=COLORS[index % len(COLORS)], linewidth=1.4,
                marker="o" if len(values) <= 30 else None, markersize=3.5,
                label=_label(run, what, len(runs) > 1) or None)
        drawn += values
    return drawn


def _minor_label(value: float, _pos) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if min(abs(mantissa - 2), abs(mantissa - 5)) < 1e-6 else ""


def _finish(ax, values: list[float], ylabel: str, log: bool | None = None, legend: bool = True) -> None:
    """Label, grid, legend; log scale when forced, or when positive values span >= 20x."""
    if log is None:
        log = bool(values) and min(values) > 0 and max(values) / min(values) >= 20
    if log and values and min(values) > 0:
        ax.set_yscale("log")
        # Plain numbers (3, 20, 1000), not 3x10^0; within a decade or two the major ticks
        # alone are too few, so the minor ones at 2x and 5x get labels too.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label) if max(values) / min(values) < 100
                                     else NullFormatter())
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    if legend and ax.get_legend_handles_labels()[1]:   # labelled: several runs, or several keys in a panel
        ax.legend(fontsize="small")


def _figure_legend(fig: Figure, axes) -> None:
    """One legend above a grid of panels instead of one per panel: the runs are the same
    in every panel, and 32 legends would hide the lines they label."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside upper center", ncols=min(len(seen), 4),
                   fontsize="small")


def _single(runs, key, name, title, ylabel, log=None, scale=1.0) -> Plot | None:
    if not any(run.has(key) for run in runs):
        return None
    fig, (ax,) = _panels(1)
    values = _draw(ax, runs, key, scale=scale)
    ax.set_xlabel("step")
    ax.set_title(title)
    _finish(ax, values, ylabel, log)
    return Plot(name, title, fig)


def loss_plot(runs: list[Run]) -> Plot | None:
    """Train CE against validation loss: both are next-token CE, so the gap is overfitting,
    not the balancing terms (the total ``train/loss`` is drawn with those, in the train group)."""
    train_key = "train/ce" if any(r.has("train/ce") for r in runs) else "train/loss"
    if not any(r.has(train_key) or r.has("val/loss") for r in runs):
        return None
    fig, (ax,) = _panels(1)
    values = _draw(ax, runs, train_key, "train") + _draw(ax, runs, "val/loss", "val", style="--")
    ax.set_xlabel("step")
    ax.set_title("Loss: train (solid) and validation (dashed)")
    _finish(ax, values, "cross-entropy (nats/token)")
    return Plot("loss", "Training and validation loss", fig)


def throughput_plot(runs: list[Run]) -> Plot | None:
    keys = [k for k in ("perf/tokens_per_s", "perf/mfu") if any(r.has(k) for r in runs)]
    if not keys:
        return None
    fig, axes = _panels(len(keys), size=(6.0, 3.6))
    for ax, key in zip(axes, keys, strict=True):
        is_mfu = key == "perf/mfu"
        values = _draw(ax, runs, key, scale=100.0 if is_mfu else 1.0)
        ax.set_title("model FLOPs utilisation" if is_mfu else "throughput")
        _finish(ax, values, "MFU (%)" if is_mfu else "tokens / s", log=False, legend=len(keys) == 1)
    if len(keys) > 1:
        _figure_legend(fig, axes)
    if len(keys) == 1:
        axes[0].set_xlabel("step")
    return Plot("throughput", "Throughput and MFU", fig)


def load_plot(runs: list[Run]) -> Plot | None:
    """Max/min tokens per expert, per layer: 1 is perfect balance; a dead expert shows as a
    spike to the max count (the trainer clamps the min at 1), hence the log scale."""
    layers = sorted({int(m[1]) for r in runs for k in r.scalars if (m := LAYER_LOAD.match(k))})
    keys = [f"moe/layer{i}/load_max_min" for i in layers] or ["moe/load_max_min"]
    if not any(r.has(k) for r in runs for k in keys):
        return None
    title = "Expert load balance per layer (max/min tokens per expert)"
    if len(keys) > MAX_PANELS:
        title += f", first {MAX_PANELS} of {len(keys)} layers"
        keys = keys[:MAX_PANELS]
    fig, axes = _panels(len(keys))
    for ax, key in zip(axes, keys, strict=True):
        values = _draw(ax, runs, key)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        m = LAYER_LOAD.match(key)
        ax.set_title(f"layer {m[1]}" if m else "worst layer")
        _finish(ax, values + [1.0], "max / min tokens", log=True, legend=len(keys) == 1)
    if len(keys) > 1:
        _figure_legend(fig, axes)
    if len(keys) == 1:
        axes[0].set_xlabel("step")
    return Plot("expert_load", title, fig)


def _share_matrix(run: Run) -> tuple[list[int], list[list[float]], int] | None:
    """Layers, rows of per-expert token shares, and the latest step among them."""
    found = sorted((int(m[1]), v) for k, v in run.vectors.items() if (m := LAYER_TOKENS.match(k)))
    if not found:
        return None
    width = max(len(counts) for _, (_, counts) in found)
    rows = []
    for _, (_, counts) in found:
        total = sum(counts) or 1.0
        rows.append([c / total for c in counts] + [math.nan] * (width - len(counts)))
    return [layer for layer, _ in found], rows, max(step for _, (step, _) in found)


def share_plot(runs: list[Run]) -> Plot | None:
    """Heatmap of the latest step's routing split: colour is load relative to uniform
    (1 = balanced, red over-loaded, blue starved), the text the share of routed tokens."""
    tables = [(run, t) for run in runs if (t := _share_matrix(run)) is not None]
    if not tables:
        return None
    height = max(4.2, 0.22 * max(len(layers) for _, (layers, _, _) in tables))   # a readable row per layer
    fig, axes = _panels(len(tables), max_cols=2, size=(5.6, height), over_steps=False)
    image = None
    for ax, (run, (layers, rows, step)) in zip(axes, tables, strict=True):
        n_experts = len(rows[0])
        relative = [[s * n_experts for s in row] for row in rows]
        image = ax.imshow(relative, cmap="RdBu_r", aspect="auto", norm=TwoSlopeNorm(1.0, 0.0, 2.0))
        ax.set_xticks(range(n_experts))
        ax.set_yticks(range(len(layers)), [str(i) for i in layers])
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        ax.set_title(f"{run.name}: token share per expert, step {step}" if len(runs) > 1
                     else f"Token share per expert, step {step}")
        if len(layers) * n_experts <= 128:
            for y, row in enumerate(rows):
                for x, share in enumerate(row):
                    if not math.isnan(share):
                        dark = abs(share * n_experts - 1.0) > 0.6      # white text on deep colours
                        ax.text(x, y, f"{share:.0%}", ha="center", va="center", fontsize=8,
                                color="white" if dark else "black")
    fig.colorbar(image, ax=axes, label="load relative to uniform (1 = balanced, clipped at 2)", shrink=0.9)
    return Plot("expert_share", "Per-expert token shares at the latest logged step", fig)


def memory_plot(runs: list[Run]) -> Plot | None:
    keys = sorted({k for r in runs for k in r.scalars if k.startswith("mem/")})
    if not keys:
        return None
    fig, (ax,) = _panels(1)
    styles = ["-", "--", ":", "-."]
    values: list[float] = []
    for i, key in enumerate(keys):
        values += _draw(ax, runs, key, key.removeprefix("mem/"), style=styles[i % len(styles)])
    ax.set_xlabel("step")
    ax.set_title("Memory of rank 0")
    _finish(ax, values, "GB", log=False)
    return Plot("memory", "Memory (rank 0's process; peak = high-water mark)", fig)


# Keys the fixed plots draw; everything else goes to the generic group figures.
FIXED = {"train/ce", "val/loss", "train/lr", "train/grad_norm", "perf/tokens_per_s", "perf/mfu",
         "moe/load_max_min"}


def _covered(key: str) -> bool:
    return key in FIXED or key.startswith("mem/") or bool(LAYER_LOAD.match(key))


def group_plots(runs: list[Run]) -> list[Plot]:
    """One figure per top-level group of the keys no fixed plot draws, one panel per key."""
    groups: dict[str, list[str]] = {}
    for key in sorted({k for r in runs for k in r.scalars if not _covered(k)}):
        groups.setdefault(key.split("/", 1)[0] if "/" in key else "other", []).append(key)
    plots = []
    for group in sorted(groups, key=lambda g: (g not in GROUP_TITLES, g)):
        keys = groups[group][:MAX_PANELS]
        fig, axes = _panels(len(keys))
        title = GROUP_TITLES.get(group, f"Other {group}/ metrics")
        if len(groups[group]) > MAX_PANELS:
            title += f" (first {MAX_PANELS} of {len(groups[group])})"
        for ax, key in zip(axes, keys, strict=True):
            values = _draw(ax, runs, key)
            ax.set_title(key, fontsize="medium")
            _finish(ax, values, key.split("/")[-1], legend=len(keys) == 1)
        if len(keys) > 1:
            _figure_legend(fig, axes)
        if len(keys) == 1:
            axes[0].set_xlabel("step")
        plots.append(Plot("group_" + re.sub(r"[^A-Za-z0-9_-]", "_", group), title, fig))
    return plots


def build_plots(runs: list[Run]) -> list[Plot]:
    """Every plot the runs have data for, in reading order; absent metrics give no plot."""
    fixed = [
        loss_plot(runs),
        _single(runs, "train/lr", "lr", "Learning rate", "learning rate"),
        throughput_plot(runs),
        _single(runs, "train/grad_norm", "grad_norm", "Gradient norm", "L2 norm", log=True),
        load_plot(runs),
        share_plot(runs),
        memory_plot(runs),
    ]
    return [p for p in fixed if p is not None] + group_plots(runs)


def save_plot(plot: Plot, directory: Path) -> Path:
    """Write <name>.png through a temporary file, so an interrupted report leaves no torn PNG."""
    path = directory / f"{plot.name}.png"
    tmp = directory / f".{plot.name}.png.tmp"
    plot.figure.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
    return path
