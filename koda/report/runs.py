"""Reading a run directory: ``metrics.jsonl`` into per-key series, plus the two config files.

The metrics file is written line by line by a process that can die at any moment (see
``koda/run/metrics.py``), so the reader is forgiving where a live or killed run leaves
marks (a truncated last line, ``null`` for a non-finite loss, keys that appear only every
``eval_every`` steps) and strict only where nothing useful is left (no directory, no file,
no readable line). Everything forgiven is reported as a warning on the run, never dropped
silently, because a NaN loss or a corrupt line is itself something the reader should see.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from koda.errors import KodaError
from koda.run_layout import METRICS as METRICS_FILE
from koda.run_layout import RunLayout

RESERVED = ("step", "time")


@dataclass(frozen=True)
class Series:
    """One scalar metric over steps, sorted by step, one value per step."""

    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def last(self) -> tuple[int, float]:
        return self.steps[-1], self.values[-1]

    def best(self) -> tuple[int, float]:
        """(step, value) of the smallest value: the best for losses, the only use today."""
        index = min(range(len(self.values)), key=self.values.__getitem__)
        return self.steps[index], self.values[index]


@dataclass
class Run:
    """Everything a report needs from one run directory.

    `scalars` maps a metric name to its series; `vectors` maps a list-valued metric
    (``moe/layer<N>/tokens``, one count per expert) to its latest (step, values) only,
    because the report shows the latest routing split and a full history of every layer's
    counts would dominate memory on long runs. `config`/`ds_config` are None when absent.
    """

    name: str
    path: Path
    scalars: dict[str, Series]
    vectors: dict[str, tuple[int, tuple[float, ...]]]
    times: Series | None = None          # unix time per logged step, for the wall-clock span
    config: dict | None = None
    ds_config: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def has(self, key: str) -> bool:
        return key in self.scalars

    def by_step(self) -> dict[int, dict[str, float]]:
        """The scalars regrouped as one {key: value} per logged step: the shape of a table
        that prints a row per step (a comparison side by side)."""
        rows: dict[int, dict[str, float]] = {}
        for key, series in self.scalars.items():
            for step, value in zip(series.steps, series.values, strict=True):
                rows.setdefault(step, {})[key] = value
        return dict(sorted(rows.items()))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_records(path: Path, warnings: list[str]) -> list[dict]:
    """Parse the file's lines into dicts with an integer step; warn about what is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise KodaError(f"cannot read {path}: {err.strerror}") from None
    lines = text.split("\n")
    unterminated = lines.pop()      # "" when the file ends with a newline, as complete files do
    records, bad = [], []
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if unterminated.strip():
        numbered.append((len(lines) + 1, unterminated))
    for number, line in numbered:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and _is_number(record.get("step")) and float(record["step"]).is_integer():
            records.append(record)
        elif number == len(lines) + 1:
            warnings.append(f"last line {number} is truncated (run killed mid-write?): skipped")
        else:
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        warnings.append(f"{len(bad)} malformed line(s) skipped (line {shown})")
    return records


def _series(points: dict[int, float]) -> Series:
    steps = tuple(sorted(points))
    return Series(steps, tuple(points[s] for s in steps))


def _collect(records: list[dict], warnings: list[str]):
    """Split records into scalar series, latest vectors and skipped-value counts.

    A step logged twice keeps its later line: after a resume the newer line describes the
    trajectory the model took (the trainer truncates, but a copied file may not be).
    """
    scalars: dict[str, dict[int, float]] = {}
    vectors: dict[str, tuple[int, tuple[float, ...]]] = {}
    times: dict[int, float] = {}
    non_finite: dict[str, list[int]] = {}
    non_numeric: dict[str, int] = {}
    for record in records:
        step = int(record["step"])
        if _is_number(record.get("time")):
            times[step] = float(record["time"])
        for key, value in record.items():
            if key in RESERVED:
                continue
            if _is_number(value) and math.isfinite(value):
                scalars.setdefault(key, {})[step] = float(value)
            elif value is None or (_is_number(value) and not math.isfinite(value)):
                non_finite.setdefault(key, []).append(step)
            elif isinstance(value, list) and value and all(_is_number(v) and math.isfinite(v) for v in value):
                if key not in vectors or vectors[key][0] <= step:
                    vectors[key] = (step, tuple(float(v) for v in value))
            else:
                non_numeric[key] = non_numeric.get(key, 0) + 1
    for key, steps in sorted(non_finite.items()):
        shown = ", ".join(map(str, steps[:5])) + (", ..." if len(steps) > 5 else "")
        warnings.append(f"{key}: {len(steps)} NaN/inf value(s) skipped (step {shown})")
    for key, count in sorted(non_numeric.items()):
        warnings.append(f"{key}: {count} non-numeric value(s) skipped")
    return {k: _series(v) for k, v in scalars.items()}, vectors, (_series(times) if times else None)


def _read_json(path: Path, warnings: list[str]) -> dict | None:
    """A config file is optional for a report: its absence costs only the highlights."""
    if not path.is_file():
        warnings.append(f"no {path.name}: its highlights are left out")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        warnings.append(f"{path.name} is unreadable ({type(err).__name__}): its highlights are left out")
        return None
    if not isinstance(value, dict):
        warnings.append(f"{path.name} is not a JSON object: its highlights are left out")
        return None
    return value


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Load one run directory; raise KodaError when there is nothing to report."""
    path = Path(path)
    if not path.exists():
        raise KodaError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise KodaError(f"{path} is not a directory (expected a run directory holding {METRICS_FILE})")
    metrics = path / METRICS_FILE
    if not metrics.is_file():
        raise KodaError(f"{path}: no {METRICS_FILE} (not a KODA run directory, or no step logged yet)")
    warnings: list[str] = []
    records = _read_records(metrics, warnings)
    if not records:
        detail = "empty" if metrics.stat().st_size == 0 else "without a single readable line"
        raise KodaError(f"{metrics} is {detail}: nothing to report")
    scalars, vectors, times = _collect(records, warnings)
    if not scalars and not vectors:
        raise KodaError(f"{metrics} has no numeric metric values: nothing to report")
    return Run(name=name or path.resolve().name, path=path, scalars=scalars, vectors=vectors, times=times,
               config=_read_json(RunLayout(path).config, warnings),
               ds_config=_read_json(RunLayout(path).ds_config, warnings), warnings=warnings)


def run_names(paths: list[Path]) -> list[str]:
    """Legend names: the directory name, widened with parents until the names differ.

    Two runs are often ``exp1/run`` and ``exp2/run``; naming both ``run`` would make a
    comparison plot useless, and full paths make legends unreadable.
    """
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{p[-1]} #{i + 1}" for i, p in enumerate(parts)]   # the same directory given twice


def load_runs(paths: list[str | Path]) -> list[Run]:
    paths = [Path(p) for p in paths]
    return [load_run(p, name) for p, name in zip(paths, run_names(paths), strict=True)]
