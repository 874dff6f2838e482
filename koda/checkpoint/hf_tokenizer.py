"""KODA's sentencepiece model as Hugging Face tokenizer files, written with the hf-mixtral export.

``tokenizer.json`` is built here, from the sentencepiece model alone (no ``tokenizers`` or
``transformers`` needed to write it), to give KODA's own ids: transformers' Llama classes
and its sentencepiece converter would add a dummy prefix space, split at every space (a
``Metaspace`` pre-tokenizer breaks KODA's whitespace-only pieces such as 8 spaces of
indentation) and strip a leading space on decode. The pipeline instead mirrors
sentencepiece's BPE encoder for KODA's settings (``koda.data.tokenizer.train_tokenizer``):

- normalizer: ``" "`` -> ``"▁"`` and nothing else (identity rule, no dummy prefix, no
  whitespace collapsing);
- pre-tokenizer: sentencepiece's word split with whitespace-only pieces allowed, a run of
  ``▁`` plus the non-``▁`` characters after it (no KODA piece crosses that boundary);
- model: BPE whose merge ranks follow the piece scores (sentencepiece merges the pair whose
  result scores highest), byte fallback for characters outside the vocabulary; ``"\\n"`` and
  ``"\\t"`` are single-character pieces no merge produces, so they stay atomic as in
  sentencepiece, and digits are split because no piece holds a digit beside anything else;
- decoder: ``"▁"`` -> ``" "``, bytes fused back into UTF-8, no space stripped.

``tokenizer_class`` is ``PreTrainedTokenizerFast`` so both transformers 4.x and 5.x use this
pipeline as written (5.x's named classes rebuild their own). Nothing is added around the
text (no BOS/EOS), as ``Tokenizer.encode``. One difference remains, the Hugging Face
convention: the literal strings ``<s>``, ``</s>``, ``<unk>``, ``<pad>`` in text encode as
their special ids (a trainer that appends ``eos_token`` to text gets EOS);
``split_special_tokens=True`` encodes them as characters, as KODA does.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm

from koda.data.tokenizer import BOS, EOS, PAD, UNK
from koda.errors import KodaError

WS = "\u2581"      # sentencepiece's whitespace symbol
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
PROBES = ("x", "a  \n\t b", "\U0001f600 \u00e9")     # round trips only with byte fallback

# koda generate's default length (koda.infer.config.GenerationConfig; a test keeps them equal):
# not imported, since the export stands below inference in the package layering
DEFAULT_MAX_NEW_TOKENS = 128


def _processor(path: Path) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(path.read_bytes())
    except (RuntimeError, OSError):
        raise KodaError(f"tokenizer {path}: not a valid sentencepiece model") from None
    return sp


def _check_settings(sp: spm.SentencePieceProcessor, path: Path) -> None:
    """Refuse a sentencepiece model trained otherwise than KODA trains one: the pipeline
    above would then give other ids than sentencepiece does."""
    ids = range(sp.get_piece_size())
    normal = [i for i in ids if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))]
    scores = [sp.get_score(i) for i in normal if sp.get_score(i) != 0]     # user symbols and the first merge: 0
    bpe = all(b == a - 1 for a, b in zip([0.0, *scores], scores, strict=False))   # BPE scores: 0, -1, -2, ...
    verbatim = all(sp.decode(sp.encode(p)) == p for p in PROBES) and sp.encode("x", out_type=str)[0][0] != WS
    specials = [sp.id_to_piece(i) for i in (UNK, BOS, EOS, PAD)] == ["<unk>", "<s>", "</s>", "<pad>"]
    if not (bpe and verbatim and specials and sum(map(sp.is_byte, ids)) == 256):
        raise KodaError(f"tokenizer {path}: not trained with KODA's sentencepiece settings "
                        f"(BPE, byte fallback, verbatim whitespace, ids {UNK}-{PAD} <unk> <s> </s> <pad>)")


def _merges(sp: spm.SentencePieceProcessor, vocab: dict[str, int]) -> list[list[str]]:
    """Every split of a normal piece into two vocabulary pieces, the best-scoring result
    first; splits of one piece shorter-left first (transformers' ``generate_merges`` order)."""
    merges = []
    for piece, i in vocab.items():
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab and not sp.is_byte(vocab[left]) and not sp.is_byte(vocab[right]):
                merges.append((-sp.get_score(i), i, cut, left, right))
    return [[left, right] for *_, left, right in sorted(merges)]


def tokenizer_json(path: str | Path) -> dict:
    """The ``tokenizer.json`` of the sentencepiece model at `path`."""
    path = Path(path)
    sp = _processor(path)
    _check_settings(sp, path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    special = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True} for i in (UNK, BOS, EOS, PAD)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": WS},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": f"{WS}+[^{WS}]*|[^{WS}]+"},
                          "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": WS}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": sp.id_to_piece(UNK), "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": _merges(sp, vocab)},
    }


def special_tokens_map() -> dict:
    return {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def tokenizer_config(max_length: int) -> dict:
    """add_bos/eos false: KODA's documents carry no BOS, and EOS ends one (``koda.infer.complete``
    starts a prompt with EOS, the separator the model saw before every document)."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", **special_tokens_map(),
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": max_length}


def generation_config() -> dict:
    """Greedy with KODA's default length, ending at EOS."""
    return {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "do_sample": False,
            "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}


def write_hf_files(directory: Path, tokenizer: str | Path | None, max_length: int) -> None:
    """``generation_config.json``, and with a tokenizer the three tokenizer files, into `directory`."""
    files = {"generation_config.json": generation_config()}
    if tokenizer is not None:
        files |= {"tokenizer.json": tokenizer_json(tokenizer), "tokenizer_config.json": tokenizer_config(max_length),
                  "special_tokens_map.json": special_tokens_map()}
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
