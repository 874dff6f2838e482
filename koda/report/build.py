"""Assembling a report: load the runs, save every plot, then write ``index.html`` last.

Order matters for interruption: PNGs go through temporary files and the page is renamed
into place only after every PNG it embeds exists, so a report killed half-way leaves the
previous ``index.html`` (or none), never a torn page that looks complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from koda.errors import KodaError
from koda.report.html import render
from koda.report.plots import build_plots, save_plot
from koda.report.runs import Run, load_runs
from koda.report.summary import summarize

INDEX = "index.html"


@dataclass(frozen=True)
class Report:
    output: Path
    index: Path
    plots: list[Path]
    runs: list[Run]

    @property
    def warnings(self) -> list[str]:
        return [f"{run.name}: {w}" for run in self.runs for w in run.warnings]


def default_output(run_dirs: list[str | Path], output: str | Path | None) -> Path:
    """RUN_DIR/report for one run; several runs have no natural home, so they need --output."""
    if output is not None:
        return Path(output)
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    raise KodaError(f"{len(run_dirs)} runs given: say where the comparison goes with --output DIR")


def _prepare(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise KodaError(f"output {output} exists and is not a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KodaError(f"cannot create output directory {output}: {err.strerror}") from None


def write_report(run_dirs: list[str | Path], output: str | Path | None = None) -> Report:
    """Write the plots and ``index.html`` of `run_dirs` (compared when several) to `output`."""
    if not run_dirs:
        raise KodaError("no run directory given")
    out = default_output(run_dirs, output)
    runs = load_runs(run_dirs)              # every input checked before anything is written
    _prepare(out)
    images, paths = [], []
    try:
        for plot in build_plots(runs):
            path = save_plot(plot, out)
            paths.append(path)
            images.append((plot.name, plot.title, path.read_bytes()))
    except OSError as err:
        raise KodaError(f"cannot write plots to {out}: {err.strerror}") from None
    page = render(runs, [summarize(run) for run in runs], images)
    index, tmp = out / INDEX, out / f".{INDEX}.tmp"
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, index)
    except OSError as err:
        raise KodaError(f"cannot write {index}: {err.strerror}") from None
    return Report(out, index, paths, runs)
