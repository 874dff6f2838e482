"""(compute, loss) points for a scaling fit: from run directories or from a table.

A run directory gives one point per validation: compute after ``step`` optimizer steps is
``step · tokens_per_step · flops_per_token``, where tokens per step is DeepSpeed's
``train_batch_size`` (sequences per step over all ranks, from ``ds_config.json``) times
``data.seq_len``, and FLOPs per token is ``koda.run.flops.train_flops_per_token`` of the
model in ``config.json`` (6·N_active plus attention; the same figure MFU is logged against).
The step-0 validation (the untrained baseline) has zero compute and no place on a log axis,
so it is left out. A table is a ``.csv`` with a header naming ``compute`` and ``loss``, or a
``.jsonl`` of objects with those two keys.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from koda.errors import KodaError
from koda.report.runs import load_run
from koda.run_layout import RunLayout

LOSS_KEY = "val/loss"


@dataclass(frozen=True)
class Points:
    """One input's points, in input order."""

    source: str                         # the run directory or table file, as given
    compute: tuple[float, ...]          # training FLOPs at each point
    loss: tuple[float, ...]
    steps: tuple[int, ...] = ()         # the optimizer step of each point (runs only)
    flops_per_token: float | None = None
    tokens_per_step: int | None = None


def _config(path: Path, what: str) -> dict:
    if not path.is_file():
        raise KodaError(f"{path.parent}: no {path.name} (needed for the {what})")
    try:
        value = json.loads(path.read_text())
    except ValueError:
        raise KodaError(f"{path}: not valid JSON") from None
    if not isinstance(value, dict):
        raise KodaError(f"{path}: the top level must be a JSON object")
    return value


def flops_per_token(config: dict, source: Path) -> tuple[float, int]:
    """(training FLOPs per token, seq_len) of the model a run's config.json describes."""
    from koda.model.config import ModelConfig
    from koda.run.flops import train_flops_per_token  # imports torch: only when a run is read

    try:
        model = ModelConfig.from_dict(config["model"])
        seq_len = int(config["data"]["seq_len"])
    except (KeyError, TypeError):
        raise KodaError(f"{source}: config.json has no model section or no data.seq_len") from None
    return train_flops_per_token(model, seq_len), seq_len


def read_run(path: str | Path) -> Points:
    """The validation losses of one run directory against training compute."""
    layout = RunLayout(path)
    run = load_run(layout.root)
    series = run.scalars.get(LOSS_KEY)
    kept = [(s, v) for s, v in zip(series.steps, series.values, strict=True) if s > 0] if series else []
    if not kept:
        raise KodaError(f"{layout.root}: no {LOSS_KEY} after step 0 in metrics.jsonl (no validation ran yet)")
    fpt, seq_len = flops_per_token(_config(layout.config, "model's FLOPs per token"), layout.root)
    batch = _config(layout.ds_config, "global batch").get("train_batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise KodaError(f"{layout.ds_config}: train_batch_size must be a positive integer, got {batch!r}")
    tokens_per_step = batch * seq_len
    steps = tuple(s for s, _ in kept)
    return Points(source=str(path), compute=tuple(s * tokens_per_step * fpt for s in steps),
                  loss=tuple(v for _, v in kept), steps=steps, flops_per_token=fpt,
                  tokens_per_step=tokens_per_step)


def _number(value, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise KodaError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise KodaError(f"{where}: {value!r} must be positive and finite for a log-log fit")
    return number


def read_table(path: str | Path) -> Points:
    """Points from a .csv (header with compute and loss columns) or a .jsonl file."""
    path = Path(path)
    rows: list[tuple[str, dict]] = []
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"compute", "loss"} - set(reader.fieldnames or ())
            if missing:
                raise KodaError(f"{path}: the CSV header needs columns compute and loss (missing {sorted(missing)[0]})")
            rows = [(f"{path} line {i + 2}", row) for i, row in enumerate(reader)]
    else:
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise KodaError(f"{path} line {i + 1}: not valid JSON") from None
            if not isinstance(row, dict) or not {"compute", "loss"} <= set(row):
                raise KodaError(f"{path} line {i + 1}: expected an object with compute and loss")
            rows.append((f"{path} line {i + 1}", row))
    if not rows:
        raise KodaError(f"{path}: no points")
    compute = tuple(_number(row["compute"], f"{where} compute") for where, row in rows)
    loss = tuple(_number(row["loss"], f"{where} loss") for where, row in rows)
    return Points(source=str(path), compute=compute, loss=loss)


def read_inputs(paths: list[str | Path]) -> list[Points]:
    """A directory is read as a run, a .csv/.jsonl file as a table."""
    out = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            out.append(read_run(path))
        elif path.is_file() and path.suffix in (".csv", ".jsonl"):
            out.append(read_table(path))
        elif path.exists():
            raise KodaError(f"{path}: expected a run directory, a .csv or a .jsonl file")
        else:
            raise KodaError(f"{path} does not exist")
    return out
