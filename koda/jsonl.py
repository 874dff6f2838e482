"""Reading JSON-lines files that users hand to KODA (tasks, samples, prompts).

One reader, so every such file fails the same way: a one-line ``KodaError`` naming the file
(with the option it came from) and the line, never a traceback.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from koda.errors import KodaError


def read_objects(path: str | Path, label: str = "") -> Iterator[tuple[str, dict]]:
    """Yield ("<label> <path>:<line>", object) for every non-blank line of `path` (plain or
    ``.gz``); `label` (e.g. ``--samples``) goes before the path in errors."""
    path = Path(path)
    name = f"{label} {path}" if label else str(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise KodaError(f"{name}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            row = json.loads(line)
        except ValueError:
            raise KodaError(f"{where}: not valid JSON") from None
        if not isinstance(row, dict):
            raise KodaError(f"{where}: not a JSON object")
        yield where, row
