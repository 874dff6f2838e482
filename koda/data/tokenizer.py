"""SentencePiece tokenizer for code: BPE with byte fallback, whitespace kept verbatim.

Code needs what prose tokenizers normalise away: runs of spaces (indentation), tabs and
newlines must survive a round trip exactly. So: identity normalisation, no whitespace
collapsing, no dummy prefix, whitespace-only pieces allowed (one token for 8 spaces of
indentation), newline and tab as their own symbols, digits split, and byte fallback so no
input is ever <unk>. Whole files are training "sentences" (a line-based split would never
show the trainer a newline).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from koda.errors import KodaError

UNK, BOS, EOS, PAD = 0, 1, 2, 3


class Tokenizer:
    def __init__(self, path: str | Path):
        path = Path(path)
        try:
            proto = path.read_bytes()
        except OSError as err:
            raise KodaError(f"tokenizer {path}: cannot read ({err.strerror})") from None
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load_from_serialized_proto(proto)
        except (RuntimeError, OSError):
            raise KodaError(f"tokenizer {path}: not a valid sentencepiece model (corrupt or truncated)") from None
        self.path = path
        self.fingerprint = hashlib.blake2b(proto, digest_size=8).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts, num_threads=os.cpu_count() or 1)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def piece(self, token: int) -> str:
        return self._sp.id_to_piece(int(token))


def train_tokenizer(documents: Iterable[str], output: str | Path, vocab_size: int, seed_sentences: int = 0) -> Path:
    """Train on `documents` and write the model to `output` atomically (tmp file + rename),
    so an interrupted run never leaves a truncated model where a later run would load it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(documents), model_writer=buffer, vocab_size=vocab_size,
            model_type="bpe", byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
            allow_whitespace_only_pieces=True, split_digits=True, user_defined_symbols=["\n", "\t"],
            max_sentence_length=1 << 22, input_sentence_size=seed_sentences, shuffle_input_sentence=False,
            unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=PAD, num_threads=os.cpu_count() or 1,
            minloglevel=2)
    except RuntimeError as err:
        raise KodaError(f"tokenizer training failed: {str(err).splitlines()[-1]}") from None
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, output)
    return output
