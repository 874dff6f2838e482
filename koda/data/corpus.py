"""Where training text comes from: the interpreter's own standard library by default.

Every Python install ships a few thousand real source files, so a fresh machine with no
network still trains on real code. ``site-packages`` is skipped: it holds whatever the user
installed, which would make the corpus (and so the tokenizer and the run) machine-dependent.

Sources: ``.py``/``.txt`` files (one document each), ``.jsonl`` (one per line), ``.parquet``
files and ``datasets`` ``save_to_disk`` directories (one per row, streamed: koda.data.arrow);
the structured ones take the document from the ``text_column`` field (``data.text_column``).
"""

from __future__ import annotations

import glob
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from koda.data.arrow import is_saved_dataset, iter_parquet, iter_saved_dataset
from koda.errors import KodaError

STDLIB = "stdlib"


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())


def resolve_sources(sources: list[str]) -> list[Path]:
    """Expand ``stdlib`` and glob patterns into a sorted, de-duplicated list of files and saved
    dataset directories (other directories a glob matches are skipped)."""
    files: list[Path] = []
    for source in sources:
        if source == STDLIB:
            files += stdlib_files()
            continue
        matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
        matches = [m for m in matches if m.is_file() or is_saved_dataset(m)]
        if not matches:
            raise KodaError(f"data.sources: {source!r} matches no file or saved dataset directory")
        files += matches
    return sorted(set(files))


def _jsonl(path: Path, column: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)[column]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise KodaError(f"{path}:{number}: not a JSON object with a {column!r} field ({err})") from None


def iter_source(path: Path, text_column: str = "text") -> Iterator[str]:
    """The documents of one resolved source, lazily."""
    if path.is_dir():
        yield from iter_saved_dataset(path, text_column)
    elif path.suffix == ".jsonl":
        yield from _jsonl(path, text_column)
    elif path.suffix == ".parquet":
        yield from iter_parquet(path, text_column)
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield text


def iter_documents(files: list[Path], max_bytes: int | None = None, text_column: str = "text") -> Iterator[str]:
    """Yield documents: one per text/.py file, one per .jsonl line or Parquet/saved-dataset row
    (its `text_column` field).

    Stops once `max_bytes` of text has been yielded (None: no limit). Undecodable bytes are
    replaced rather than skipped so a stray Latin-1 file cannot abort a long preprocessing run.
    """
    total = 0
    for path in files:
        for text in iter_source(path, text_column):
            total += len(text)
            yield text
            if max_bytes is not None and total >= max_bytes:
                return
