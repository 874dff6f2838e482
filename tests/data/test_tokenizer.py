from pathlib import Path

import pytest

from koda.data.tokenizer import EOS, Tokenizer
from koda.errors import KodaError

CODE = "def f(x):\n\tif x:\n        return [x, 'é😀', 0x1F]  # ünï\n\n\n    \t  \r\nclass A: pass\n"


def test_round_trip_keeps_whitespace_and_unicode_exactly(tiny_data):
    tok = Tokenizer(tiny_data.tokenizer)
    assert tok.decode(tok.encode(CODE)) == CODE
    assert tok.vocab_size == 512 and tok.vocab_size > EOS


def test_indentation_compresses(tiny_data):
    tok = Tokenizer(tiny_data.tokenizer)
    assert len(tok.encode("        return x\n")) < len("        return x\n") / 2


def test_corrupt_and_missing_tokenizer_are_one_line_errors(tmp_path, tiny_data):
    bad = tmp_path / "bad.model"
    bad.write_bytes(Path(tiny_data.tokenizer).read_bytes()[:100])
    with pytest.raises(KodaError, match="not a valid sentencepiece model"):
        Tokenizer(bad)
    with pytest.raises(KodaError, match="cannot read"):
        Tokenizer(tmp_path / "missing.model")
