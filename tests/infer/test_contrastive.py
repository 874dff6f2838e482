"""Contrastive search against a brute-force reference: full forwards, no cache, no batching."""

import pytest
import torch
import torch.nn.functional as F

from koda.infer import GenerationConfig, generate
from koda.infer.contrastive import degeneration_penalty
from tests.helpers.infer import random_prompts


@torch.no_grad()
def naive_scores(model, ids: list[int], k: int, alpha: float, score: str) -> tuple[list[int], torch.Tensor]:
    """The stated score of each of the top-k candidates after `ids`, one full forward per candidate."""
    logits, hidden = model(torch.tensor([ids]), return_hidden=True)
    top_logprobs, top_ids = torch.log_softmax(logits[0, -1].float(), -1).topk(k)
    context = F.normalize(hidden[0].float(), dim=-1)                       # [T, D], prompt included
    out = []
    for logprob, v in zip(top_logprobs, top_ids.tolist(), strict=True):
        _, h = model(torch.tensor([ids + [v]]), return_hidden=True)
        penalty = (context @ F.normalize(h[0, -1].float(), dim=-1)).max()
        confidence = logprob if score == "logprob" else logprob.exp()
        out.append((1 - alpha) * confidence - alpha * penalty)
    return top_ids.tolist(), torch.stack(out)


@pytest.mark.parametrize("score", ["logprob", "prob"])
def test_each_chosen_token_maximises_the_stated_score(model, score):
    prompts = random_prompts((5, 11, 8))
    k, alpha, steps = 4, 0.6, 8
    cfg = GenerationConfig(strategy="contrastive", candidates=k, alpha=alpha, score=score, max_new_tokens=steps)
    outputs = generate(model, prompts, cfg, eos_id=None)
    not_top1 = 0
    for prompt, out in zip(prompts, outputs, strict=True):
        assert len(out.token_ids) == steps
        for t, token in enumerate(out.token_ids):
            candidates, scores = naive_scores(model, prompt + out.token_ids[:t], k, alpha, score)
            assert token in candidates
            assert scores[candidates.index(token)] >= scores.max() - 1e-5
            not_top1 += token != candidates[0]
    assert not_top1 > 0, "the penalty never changed a choice: the test would not tell contrastive from greedy"


def test_alpha_zero_is_greedy(model):
    prompts = random_prompts((6, 13, 9))
    greedy = generate(model, prompts, GenerationConfig(max_new_tokens=12), eos_id=None)
    contrastive = generate(model, prompts, GenerationConfig(strategy="contrastive", alpha=0.0, max_new_tokens=12),
                           eos_id=None)
    assert [o.token_ids for o in contrastive] == [o.token_ids for o in greedy]


def test_penalty_ignores_padding_and_takes_the_closest_context_state():
    context = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]]), dim=-1)    # [1, 3, 2]
    candidates = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), dim=-1)            # [1, 2, 2]
    everything = degeneration_penalty(candidates, context, torch.tensor([[True, True, True]]))
    torch.testing.assert_close(everything, torch.tensor([[1.0, 1.0]]))
    first_is_padding = degeneration_penalty(candidates, context, torch.tensor([[False, True, True]]))
    torch.testing.assert_close(first_is_padding, torch.tensor([[0.6, 1.0]]))
