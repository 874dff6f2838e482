"""Columnar sources: Parquet files and Hugging Face ``datasets`` directories written by ``save_to_disk``.

Both are read batch by batch, one column only, so a corpus far larger than memory streams into
shards: Parquet through ``ParquetFile.iter_batches`` (a row group is decoded when reached), a
saved dataset by memory-mapping each ``data-XXXXX-of-YYYYY.arrow`` file (Arrow IPC *stream*
format, as ``datasets`` writes it) and walking its record batches. ``datasets`` itself is not
needed: the directory layout is ``state.json`` (whose ``_data_files`` gives the file order),
``dataset_info.json`` and the ``.arrow`` files; ``save_to_disk`` has already applied any
``select``/``shuffle`` indices, so file order is row order.

Null values are skipped (no document); empty strings are kept, as in a ``.jsonl`` source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from koda.errors import KodaError

STATE = "state.json"
INFO = "dataset_info.json"
DICT = "dataset_dict.json"  # a DatasetDict: one sub-directory per split
BATCH_ROWS = 1024


def is_saved_dataset(path: Path) -> bool:
    """A directory ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``) wrote."""
    return path.is_dir() and any((path / name).is_file() for name in (STATE, INFO, DICT))


def saved_dataset_files(directory: Path) -> list[Path]:
    """The ``.arrow`` files of a saved dataset, in row order (``state.json`` ``_data_files``)."""
    if (directory / DICT).is_file():
        splits = sorted(p.name for p in directory.iterdir() if is_saved_dataset(p))
        raise KodaError(f"{directory}: a DatasetDict; name one split directory as the source "
                        f"(splits: {', '.join(splits) or 'none'})")
    try:
        names = [f["filename"] for f in json.loads((directory / STATE).read_text())["_data_files"]]
    except FileNotFoundError:
        names = sorted(p.name for p in directory.glob("data-*.arrow"))
    except (ValueError, KeyError, TypeError) as err:
        raise KodaError(f"{directory / STATE}: no _data_files list ({err})") from None
    if not names:
        raise KodaError(f"{directory}: a saved dataset without data-*.arrow files")
    return [directory / n for n in names]


def _check_column(path: Path, schema, column: str) -> None:
    import pyarrow as pa

    if column not in schema.names:
        raise KodaError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); "
                        "set data.text_column")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise KodaError(f"{path}: column {column!r} is {kind}, not text; set data.text_column")


def _texts(batch) -> Iterator[str]:
    """The non-null strings of a one-column record batch."""
    for text in batch.column(0).to_pylist():
        if text is not None:
            yield text


def iter_parquet(path: Path, column: str = "text", batch_rows: int = BATCH_ROWS) -> Iterator[str]:
    """Documents of one Parquet file's ``column``, ``batch_rows`` rows decoded at a time."""
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
        raise KodaError(f"{path}: not a Parquet file ({err})") from None
    with reader:
        _check_column(path, reader.schema_arrow, column)
        for batch in reader.iter_batches(batch_size=batch_rows, columns=[column]):
            yield from _texts(batch)


def iter_saved_dataset(directory: Path, column: str = "text") -> Iterator[str]:
    """Documents of a ``save_to_disk`` directory's ``column``, one record batch at a time."""
    import pyarrow as pa

    for path in saved_dataset_files(directory):
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid as err:
                raise KodaError(f"{path}: not an Arrow stream file ({err})") from None
            _check_column(path, reader.schema, column)
            index = reader.schema.get_field_index(column)
            for batch in reader:
                yield from _texts(batch.select([index]))
