"""The decoding loop: cache vs recomputation, batching with left padding, and ending rows."""

import pytest
import torch

from koda.errors import KodaError
from koda.infer import GenerationConfig, generate
from tests.helpers.infer import random_prompts
from tests.helpers.tiny import TINY

STRATEGIES = [GenerationConfig(strategy="greedy"), GenerationConfig(strategy="contrastive", alpha=0.6),
              GenerationConfig(strategy="sample", top_k=40, top_p=0.9, seed=3)]
IDS = ["greedy", "contrastive", "sample"]


def tokens(outputs):
    return [o.token_ids for o in outputs]


@pytest.mark.parametrize("cfg", STRATEGIES, ids=IDS)
def test_kv_cache_and_recomputation_agree_token_for_token(model, cfg):
    prompts = random_prompts((4, 12, 7))
    cached = generate(model, prompts, cfg.replace(max_new_tokens=16), eos_id=None)
    recomputed = generate(model, prompts, cfg.replace(max_new_tokens=16, use_cache=False), eos_id=None)
    assert tokens(cached) == tokens(recomputed)


@pytest.mark.parametrize("cfg", STRATEGIES[:2], ids=IDS[:2])
def test_left_padded_batch_gives_the_one_by_one_tokens(model, cfg):
    prompts = random_prompts((3, 14, 8, 14))
    batched = generate(model, prompts, cfg.replace(max_new_tokens=16), eos_id=None)
    alone = [generate(model, [p], cfg.replace(max_new_tokens=16), eos_id=None)[0] for p in prompts]
    assert tokens(batched) == tokens(alone)


def test_greedy_matches_argmax_of_full_forwards(model):
    prompt = random_prompts((9,))[0]
    out = generate(model, [prompt], GenerationConfig(max_new_tokens=10), eos_id=None)[0]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert out.token_ids == ids[len(prompt):]
    assert out.finish_reason == "length"


@pytest.mark.parametrize("cfg", STRATEGIES, ids=IDS)
def test_eos_and_stop_end_a_row_without_changing_the_others(model, cfg):
    prompts = random_prompts((5, 10, 7))
    cfg = cfg.replace(max_new_tokens=12)
    free = tokens(generate(model, prompts, cfg, eos_id=None))
    eos = free[0][4]                                           # prompt 0 ends at its 5th token
    stop_after = 3                                             # prompt 2 stops after 3 tokens
    outs = generate(model, prompts, cfg, eos_id=eos,
                    should_stop=lambda i, ids: i == 2 and len(ids) == stop_after)
    assert outs[0].finish_reason == "eos"
    assert outs[0].token_ids == free[0][:free[0].index(eos)]   # the EOS token itself is not kept
    assert outs[2].finish_reason == "stop" and outs[2].token_ids == free[2][:stop_after]
    if eos not in free[1]:
        assert outs[1].token_ids == free[1] and outs[1].finish_reason == "length"


def test_bad_prompts_are_one_line_errors(model):
    cfg = GenerationConfig(max_new_tokens=8)
    with pytest.raises(KodaError, match="prompt 1 is empty"):
        generate(model, [[5, 6], []], cfg)
    with pytest.raises(KodaError, match="outside the model's vocabulary"):
        generate(model, [[5, TINY.vocab_size]], cfg)
    with pytest.raises(KodaError, match="exceeds the model's max_seq_len 64"):
        generate(model, [[5] * 60], cfg)
    with pytest.raises(KodaError, match="no prompts"):
        generate(model, [], cfg)
