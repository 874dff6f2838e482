import numpy as np
import pytest

from koda.data.preprocess import is_validation, read_manifest
from koda.data.shards import Shard, open_split, write_shard
from koda.data.tokenizer import EOS
from koda.errors import KodaError


def _shard(tmp_path, n=100):
    tokens = np.arange(n) % 500
    write_shard(tmp_path / "train_00000", tokens, np.array([40, n]), "abc", 512)
    return tmp_path / "train_00000.idx"


def test_write_then_read(tmp_path):
    shard = Shard(_shard(tmp_path), verify_hash=True)
    assert shard.tokens.dtype == np.uint16 and len(shard) == 100
    assert shard.doc_ends.tolist() == [40, 100]
    assert shard.tokens[7] == 7


def test_truncated_bin_is_named(tmp_path):
    idx = _shard(tmp_path)
    bin_path = idx.with_suffix(".bin")
    bin_path.write_bytes(bin_path.read_bytes()[:-2])
    with pytest.raises(KodaError, match=r"train_00000.bin: 198 bytes, expected 200"):
        Shard(idx)


def test_flipped_byte_fails_hash_check(tmp_path):
    idx = _shard(tmp_path)
    raw = bytearray(idx.with_suffix(".bin").read_bytes())
    raw[10] ^= 0xFF
    idx.with_suffix(".bin").write_bytes(bytes(raw))
    with pytest.raises(KodaError, match="content hash mismatch"):
        Shard(idx, verify_hash=True)


def test_garbage_index_and_other_tokenizer(tmp_path):
    idx = _shard(tmp_path)
    with pytest.raises(KodaError, match="made with tokenizer abc"):
        open_split(tmp_path, "train", tokenizer="xyz")
    idx.write_bytes(b"nonsense" * 4)
    with pytest.raises(KodaError, match="bad magic"):
        Shard(idx)
    with pytest.raises(KodaError, match="no val shards"):
        open_split(tmp_path, "val")


def test_prepared_data_has_both_splits_and_eos_separated_documents(tiny_data):
    manifest = read_manifest(tiny_data.shards_dir)
    assert manifest["splits"]["train"] and manifest["splits"]["val"]
    shard = open_split(tiny_data.shards_dir, "train")[0]
    assert int(shard.tokens[shard.doc_ends[0] - 1]) == EOS


def test_split_is_a_function_of_the_text():
    texts = [f"document {i}" for i in range(2000)]
    chosen = [t for t in texts if is_validation(t, 0.1)]
    assert 120 < len(chosen) < 280
    assert chosen == [t for t in reversed(texts) if is_validation(t, 0.1)][::-1]
