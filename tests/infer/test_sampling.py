"""Sampling: the kept distribution's support, and reproducible, self-contained randomness."""

import pytest
import torch

from koda.errors import ConfigError
from koda.infer import GenerationConfig, generate
from koda.infer.sampling import kept_distribution, next_token_probs, row_generators, sample
from tests.helpers.infer import random_prompts


def _logits(seed=0, rows=3, vocab=50):
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def test_temperature_alone_is_a_softmax():
    logits = _logits()
    torch.testing.assert_close(next_token_probs(logits, temperature=0.7), torch.softmax(logits / 0.7, -1))


def test_top_k_support_is_the_k_largest_logits():
    logits = _logits()
    probs = next_token_probs(logits, top_k=5)
    for row in range(3):
        assert set(probs[row].nonzero().flatten().tolist()) == set(logits[row].topk(5).indices.tolist())
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_support_is_the_smallest_prefix_reaching_p(top_p):
    logits = _logits(seed=1)
    probs = next_token_probs(logits, top_p=top_p)
    full = torch.softmax(logits, -1)
    for row in range(3):
        order = full[row].argsort(descending=True).tolist()
        mass, expected = 0.0, set()
        for token in order:
            expected.add(token)
            mass += full[row, token].item()
            if mass >= top_p:
                break
        assert set(probs[row].nonzero().flatten().tolist()) == expected
        torch.testing.assert_close(probs[row].sum(), torch.tensor(1.0))


def test_top_p_applies_to_the_top_k_distribution():
    logits = _logits(seed=2)
    both = next_token_probs(logits, top_k=10, top_p=0.6)
    masked = torch.full_like(logits, float("-inf")).scatter(-1, logits.topk(10).indices, logits.topk(10).values)
    torch.testing.assert_close(both, next_token_probs(masked, top_p=0.6))


def test_draws_stay_in_the_support_and_cover_it():
    logits = _logits(seed=3, rows=1, vocab=30)
    probs, ids = kept_distribution(logits, temperature=1.5, top_k=8, top_p=0.8)
    support = set(ids[0][probs[0] > 0].tolist())
    (g,) = row_generators(0, 1, "cpu")
    draws = [sample(probs, ids, [g]).item() for _ in range(3000)]
    assert set(draws) == support
    expected = next_token_probs(logits, 1.5, 8, 0.8)[0]
    for token in support:   # each frequency within 5 standard errors of its probability
        p = expected[token].item()
        assert abs(draws.count(token) / 3000 - p) < 5 * (p * (1 - p) / 3000) ** 0.5 + 1e-3


def test_same_seed_same_tokens_other_seed_other_tokens_global_rng_untouched(model):
    prompts = random_prompts((4, 9))
    cfg = GenerationConfig(strategy="sample", max_new_tokens=16, seed=11)
    rng = torch.get_rng_state()
    a, b = generate(model, prompts, cfg, eos_id=None), generate(model, prompts, cfg, eos_id=None)
    c = generate(model, prompts, cfg.replace(seed=12), eos_id=None)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.token_ids for o in a] != [o.token_ids for o in c]


def test_a_prompts_draws_do_not_depend_on_the_rows_after_it(model):
    prompts = random_prompts((6, 3, 10))
    cfg = GenerationConfig(strategy="sample", max_new_tokens=12, seed=5)
    batched = generate(model, prompts, cfg, eos_id=None)
    first_alone = generate(model, prompts[:1], cfg, eos_id=None)
    assert batched[0].token_ids == first_alone[0].token_ids


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
                                          ("candidates", 1), ("alpha", 1.5), ("strategy", "beam")])
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        GenerationConfig(**{field: value})
