"""Where training text comes from: the interpreter's own standard library by default.

Every Python install ships a few thousand real source files, so a fresh machine with no
network still trains on real code. ``site-packages`` is skipped: it holds whatever the user
installed, which would make the corpus (and so the tokenizer and the run) machine-dependent.
"""

from __future__ import annotations

import glob
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from koda.errors import KodaError

STDLIB = "stdlib"


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())


def resolve_sources(sources: list[str]) -> list[Path]:
    """Expand ``stdlib`` and glob patterns into a sorted, de-duplicated file list."""
    files: list[Path] = []
    for source in sources:
        if source == STDLIB:
            files += stdlib_files()
            continue
        matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise KodaError(f"data.sources: {source!r} matches no file")
        files += matches
    return sorted(set(files))


def iter_documents(files: list[Path], max_bytes: int | None = None) -> Iterator[str]:
    """Yield documents: one per text/.py file, one per line of a .jsonl file (its "text" field).

    Stops once `max_bytes` of text has been yielded (None: no limit). Undecodable bytes are
    replaced rather than skipped so a stray Latin-1 file cannot abort a long preprocessing run.
    """
    total = 0
    for path in files:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8", errors="replace") as lines:
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise KodaError(f"{path}:{number}: not a JSON object with a 'text' field ({err})") from None
                    total += len(text)
                    yield text
                    if max_bytes is not None and total >= max_bytes:
                        return
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            total += len(text)
            yield text
        if max_bytes is not None and total >= max_bytes:
            return
