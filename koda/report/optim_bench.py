"""Summaries of a tuned-optimizer benchmark (``tools/bench_optim.py``): each run a dict with its
validation ``curve`` [{step, seconds, val_loss}], ``final_val_loss``, ``s_per_step``, ``lr`` and
``state_mb``; per optimizer the mean and spread over seeds of reaching a target loss, the loss at
a step and a time budget, and the plots of loss against steps, seconds and learning rate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def to_target(result: dict, target: float) -> tuple[int | None, float | None]:
    for point in result["curve"]:
        if point["val_loss"] <= target:
            return point["step"], point["seconds"]
    return None, None


def loss_at_time(result: dict, budget: float) -> float:
    """Validation loss at the last evaluation within `budget` training seconds (inf: none yet)."""
    within = [p["val_loss"] for p in result["curve"] if p["seconds"] <= budget]
    return within[-1] if within else math.inf


def stats(values: list[float | None]) -> tuple[float, float] | None:
    """(mean, max - min), or None when a seed never got there."""
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(np.mean(values)), float(max(values) - min(values))


def fmt(pair, digits: int = 3) -> str:
    return "-" if pair is None else f"{pair[0]:.{digits}f} ±{pair[1] / 2:.{digits}f}"


def summarise(tuned: dict[str, list[dict]], target: float, budget: float) -> list[dict]:
    rows = []
    for name, runs in tuned.items():
        reach = [to_target(r, target) for r in runs]
        rows.append({"name": name, "lr": runs[0]["lr"], "seeds": len(runs),
                     "steps_to_target": stats([s for s, _ in reach]),
                     "seconds_to_target": stats([t for _, t in reach]),
                     "final_val_loss": stats([r["final_val_loss"] for r in runs]),
                     "val_loss_at_budget": stats([loss_at_time(r, budget) for r in runs]),
                     "s_per_step": stats([r["s_per_step"] for r in runs]),
                     "state_mb": runs[0]["state_mb"]})
    return rows


def print_table(rows: list[dict], target: float, budget: float, steps: int) -> None:
    base = rows[0]
    print(f"\ntarget validation loss {target:.4f}; time budget {budget:.1f} s; step budget {steps}")
    print("(value ±half the spread over seeds; ratios: means against AdamW's)")
    head = (f"{'optimizer':>10} {'lr':>7} {'steps@tgt':>16} {'x':>5} {'s@tgt':>16} {'x':>5} "
            f"{'loss@steps':>16} {'loss@time':>16} {'s/step':>14} {'x':>5} {'state MiB':>9}")
    print(head)

    def ratio(key):
        ours, theirs = row[key], base[key]
        return f"{ours[0] / theirs[0]:5.2f}" if ours and theirs and theirs[0] else f"{'-':>5}"

    for row in rows:
        print(f"{row['name']:>10} {row['lr']:>7g} {fmt(row['steps_to_target'], 0):>16} {ratio('steps_to_target')} "
              f"{fmt(row['seconds_to_target'], 1):>16} {ratio('seconds_to_target')} "
              f"{fmt(row['final_val_loss']):>16} {fmt(row['val_loss_at_budget']):>16} "
              f"{fmt(row['s_per_step']):>14} {ratio('s_per_step')} {row['state_mb']:9.1f}")


def plot(tuned: dict[str, list[dict]], sweep: dict[str, list[dict]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for axis, label in (("step", "step"), ("seconds", "training seconds")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, runs in tuned.items():
            n = min(len(r["curve"]) for r in runs)
            x = np.mean([[p[axis] for p in r["curve"][:n]] for r in runs], axis=0)
            y = np.array([[p["val_loss"] for p in r["curve"][:n]] for r in runs])
            line, = ax.plot(x, y.mean(0), label=f"{name} (lr {runs[0]['lr']:g})")
            ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
        ax.set(xlabel=label, ylabel="validation loss", title=title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"loss_vs_{axis}.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in sweep.items():
        ax.plot([r["lr"] for r in runs], [min(r["final_val_loss"], 20.0) for r in runs], marker="o", label=name)
    ax.set(xscale="log", xlabel="peak learning rate", ylabel="final validation loss (diverged: 20)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
