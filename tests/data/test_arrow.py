"""Parquet files and ``save_to_disk`` directories as sources: same shards as .jsonl, streamed."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from koda.data.arrow import iter_parquet, iter_saved_dataset
from koda.data.corpus import iter_documents, resolve_sources
from koda.data.preprocess import preprocess
from koda.data.tokenizer import Tokenizer
from koda.errors import KodaError

# A "path" column before "text": a reader that takes the first column instead of the named one
# reads paths. Empty documents are kept, as in .jsonl.
TEXTS = [f"def f{i}(x):\n    return x * {i}  # é{'.' * (i % 7)}\n" for i in range(300)] + ["", "class A: pass\n"]
PATHS = [f"src/m{i}.py" for i in range(len(TEXTS))]


def _jsonl(path):
    path.write_text("".join(json.dumps({"path": p, "text": t}) + "\n" for p, t in zip(PATHS, TEXTS, strict=True)))
    return path


def _parquet(path, rows=TEXTS, row_group_size=50):
    table = pa.table({"path": [f"src/m{i}.py" for i in range(len(rows))], "text": rows})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _saved_with_pyarrow(directory, table, rows_per_file, rows_per_batch):
    """The layout ``Dataset.save_to_disk`` writes: Arrow IPC stream files, state.json, dataset_info.json."""
    directory.mkdir()
    names = []
    starts = range(0, table.num_rows, rows_per_file)
    for k, start in enumerate(starts):
        names.append(f"data-{k:05d}-of-{len(starts):05d}.arrow")
        with pa.OSFile(str(directory / names[-1]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.slice(start, rows_per_file).to_batches(max_chunksize=rows_per_batch):
                writer.write_batch(batch)
    (directory / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    (directory / "dataset_info.json").write_text(json.dumps({"features": {}}))
    return directory


def _saved(directory, writer):
    table = pa.table({"path": PATHS, "text": TEXTS})
    if writer == "datasets":
        datasets = pytest.importorskip("datasets")
        datasets.disable_progress_bars()
        datasets.Dataset(table).save_to_disk(str(directory), num_shards=3)
        return directory
    return _saved_with_pyarrow(directory, table, rows_per_file=120, rows_per_batch=40)


@pytest.mark.parametrize("writer", ["datasets", "pyarrow"])
def test_parquet_and_saved_dataset_give_the_jsonl_shards(tiny_data, tmp_path, writer):
    tokenizer = Tokenizer(tiny_data.tokenizer)
    sources = {"jsonl": _jsonl(tmp_path / "c.jsonl"), "parquet": _parquet(tmp_path / "c.parquet"),
               "saved": _saved(tmp_path / "saved", writer)}
    assert len(list((tmp_path / "saved").glob("data-*.arrow"))) == 3
    out = {}
    for name, path in sources.items():
        (files,) = [resolve_sources([str(path)])]
        assert list(iter_documents(files)) == TEXTS
        manifest = preprocess(iter_documents(files), tokenizer, tmp_path / name, 0.1, shard_tokens=2000)
        shards = sorted(p.name for p in (tmp_path / name).iterdir() if p.suffix in (".bin", ".idx"))
        out[name] = manifest, {s: (tmp_path / name / s).read_bytes() for s in shards}
    assert len(out["jsonl"][1]) > 4            # several shards per split
    assert out["parquet"] == out["jsonl"] and out["saved"] == out["jsonl"]


def test_text_column_and_max_bytes_apply_to_every_source(tmp_path):
    files = resolve_sources([str(_jsonl(tmp_path / "c.jsonl")), str(_parquet(tmp_path / "c.parquet")),
                             str(_saved(tmp_path / "saved", "pyarrow"))])
    assert list(iter_documents(files, text_column="path")) == PATHS * 3
    assert list(iter_documents(files, max_bytes=27, text_column="path")) == PATHS[:3]  # 9 chars each


@pytest.mark.parametrize("kind", ["parquet", "saved"])
def test_missing_column_is_one_line_naming_file_column_and_columns(tmp_path, kind):
    if kind == "parquet":
        path = where = _parquet(tmp_path / "c.parquet")
    else:
        path = _saved(tmp_path / "saved", "pyarrow")
        where = path / "data-00000-of-00003.arrow"
    with pytest.raises(KodaError) as err:
        list(iter_documents(resolve_sources([str(path)]), text_column="content"))
    assert str(err.value) == f"{where}: no column 'content' (columns: path, text); set data.text_column"


def test_null_rows_are_skipped_and_a_non_text_column_is_refused(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": ["a", None, "b"], "n": [1, 2, 3]}), path)
    assert list(iter_parquet(path)) == ["a", "b"]
    with pytest.raises(KodaError, match=r"n.parquet: column 'n' is int64, not text"):
        list(iter_parquet(path, "n"))


def test_parquet_streams_row_groups(tmp_path):
    """The first document comes out of a file whose last row group is garbage: only what is
    asked for is decoded (reading the whole table first would fail)."""
    path = _parquet(tmp_path / "big.parquet", TEXTS * 20, row_group_size=200)
    meta = pq.ParquetFile(path).metadata
    last = meta.row_group(meta.num_row_groups - 1).column(1)          # "text" of the last group
    with open(path, "r+b") as f:
        f.seek(last.data_page_offset)
        f.write(b"\xff" * 32)                                          # its first page's header
    docs = iter_parquet(path, batch_rows=16)
    assert next(docs) == TEXTS[0]
    with pytest.raises((OSError, pa.ArrowException)):
        list(docs)


def test_saved_dataset_streams_record_batches(tmp_path):
    """Likewise a saved dataset: its one .arrow file cut short after the first record batches
    still yields its first document; reading it all fails."""
    directory = _saved_with_pyarrow(tmp_path / "saved", pa.table({"text": TEXTS * 20}),
                                    rows_per_file=len(TEXTS) * 20, rows_per_batch=100)
    (arrow,) = directory.glob("*.arrow")
    os.truncate(arrow, arrow.stat().st_size // 2)
    docs = iter_saved_dataset(directory)
    assert next(docs) == TEXTS[0]
    with pytest.raises((OSError, pa.ArrowException)):
        list(docs)


def test_a_dataset_dict_asks_for_a_split(tmp_path):
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    _saved(tmp_path / "dd" / "train", "pyarrow")
    with pytest.raises(KodaError, match=r"dd: a DatasetDict; name one split directory as the source \(splits: train\)"):
        list(iter_documents(resolve_sources([str(tmp_path / "dd")])))
