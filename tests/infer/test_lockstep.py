"""The lockstep decoding loop in one process: the same tokens as ``generate``, log-probabilities
of the sampled tokens, seeds folded from (seed, rank, step), dummy steps and shared failures
driven through a scripted ``agree``."""

import pytest
import torch

from koda.data.tokenizer import PAD
from koda.errors import ConfigError, KodaError
from koda.infer import GenerationConfig, generate
from koda.infer.lockstep import lockstep_generate
from tests.helpers.infer import random_prompts

SAMPLE = GenerationConfig(strategy="sample", top_k=40, top_p=0.9, temperature=0.8, seed=3, max_new_tokens=10)


def test_greedy_tokens_equal_generate_including_eos_and_stop(model):
    prompts = random_prompts((4, 12, 7))
    cfg = GenerationConfig(max_new_tokens=12)
    first = generate(model, prompts, cfg, eos_id=None)
    eos = first[1].token_ids[3]                                    # makes prompt 1 end early on "eos"
    stop = lambda i, ids: i == 2 and len(ids) == 5                  # noqa: E731
    expected = generate(model, prompts, cfg, eos_id=eos, should_stop=stop)
    got = lockstep_generate(model, prompts, cfg, eos_id=eos, should_stop=stop)
    assert [got.completion(i) for i in range(3)] == [c.token_ids for c in expected]
    assert got.finish_reasons == [c.finish_reason for c in expected]
    assert got.finish_reasons[1] == "eos" and got.ids[1, got.mask[1].sum() - 1] == eos   # EOS kept in ids
    assert got.mask.sum(dim=1).tolist() == [12, 4, 5]                 # 3 tokens + EOS; 5 then "stop"
    assert (got.ids[~got.mask] == PAD).all() and (got.logprobs[~got.mask] == 0).all()


def test_on_finish_hands_over_each_completion_in_the_step_it_ends(model):
    # what the RL step judges while the other rows are still decoded
    prompts = random_prompts((4, 12, 7))
    cfg = GenerationConfig(max_new_tokens=12)
    eos = generate(model, prompts, cfg, eos_id=None)[1].token_ids[3]             # prompt 1 ends at its 4th token
    stop = lambda i, ids: i == 2 and len(ids) == 5                                # noqa: E731
    seen = []
    got = lockstep_generate(model, prompts, cfg, eos_id=eos, should_stop=stop,
                            on_finish=lambda done: seen.append([(i, list(ids), r) for i, ids, r in done]))
    assert [[i for i, _, _ in batch] for batch in seen] == [[1], [2], [0]]        # in the order they ended
    for (i, ids, reason), in seen:
        assert ids == got.ids[i][got.mask[i]].tolist() and reason == got.finish_reasons[i]   # EOS included


def test_logprobs_are_those_of_the_sampled_tokens_at_the_temperature(model):
    prompts = random_prompts((6, 9))
    got = lockstep_generate(model, prompts, SAMPLE, eos_id=None)
    for row, prompt in enumerate(prompts):
        completion = got.completion(row)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion]))[0].float()          # [S, V]
        logp = torch.log_softmax(logits / SAMPLE.temperature, dim=-1)
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
        expected = logp[positions, torch.tensor(completion)]
        torch.testing.assert_close(got.logprobs[row], expected, atol=1e-5, rtol=0)
    assert not got.logprobs.is_inference() and not got.ids.is_inference()   # no_grad, not inference_mode


def test_seeds_fold_rank_and_step_reproducibly(model):
    prompts = random_prompts((6, 9))
    draw = lambda rank, step: lockstep_generate(model, prompts, SAMPLE, rank=rank, step=step, eos_id=None).ids  # noqa: E731
    assert torch.equal(draw(0, 0), draw(0, 0))
    assert not torch.equal(draw(0, 0), draw(1, 0))
    assert not torch.equal(draw(0, 0), draw(0, 1))


class Scripted:
    """An ``agree`` standing in for other ranks: they keep generating for `others` steps and
    fail at step `fail_at` (None: never). Records what this rank reported."""

    def __init__(self, others: int, fail_at: int | None = None):
        self.others, self.fail_at, self.calls = others, fail_at, []

    def __call__(self, generating: bool, failed: bool):
        step = len(self.calls) - 1                                  # the first call comes before the prefill
        self.calls.append((generating, failed))
        ranks = ([0] if failed else []) + ([1] if step == self.fail_at else [])
        return generating or step < self.others, ranks


def test_a_finished_rank_runs_dummy_steps_until_every_rank_is_done(model):
    prompts = random_prompts((5,))
    cfg = GenerationConfig(max_new_tokens=3)
    forwards = []
    handle = model.register_forward_hook(lambda *_: None)
    layer = model.model.layers[0].register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[:2]))
    try:
        agree = Scripted(others=9)
        got = lockstep_generate(model, prompts, cfg, agree=agree, eos_id=None)
    finally:
        handle.remove()
        layer.remove()
    assert got.steps == 9 and got.mask.sum() == 3
    assert forwards[:3] == [(1, 5), (1, 1), (1, 1)]                 # prefill, then the 2 real steps
    assert len(forwards) == 10                                      # prefill + 9 forwards in all
    assert [g for g, _ in agree.calls] == [False, True, True, False] + [False] * 7
    assert got.completion(0) == generate(model, prompts, cfg, eos_id=None)[0].token_ids


def test_a_rank_without_prompts_still_takes_part(model):
    got = lockstep_generate(model, [], GenerationConfig(max_new_tokens=3), agree=Scripted(others=4))
    assert got.ids.shape == (0, 0) and got.steps == 4


def test_a_failure_elsewhere_stops_this_rank_with_an_error(model):
    with pytest.raises(KodaError, match="rollout stopped at step 2: rank.s. 1 failed"):
        lockstep_generate(model, random_prompts((5,)), GenerationConfig(max_new_tokens=8),
                          agree=Scripted(others=0, fail_at=2), eos_id=None)


def test_a_local_failure_is_reported_to_the_others_then_raised(model):
    def stop(_i, ids):
        if len(ids) == 2:
            raise ValueError("boom")
        return False

    agree = Scripted(others=5)
    with pytest.raises(KodaError, match="rollout failed on rank 0 at step 1: boom"):
        lockstep_generate(model, random_prompts((5,)), GenerationConfig(max_new_tokens=8), agree=agree,
                          eos_id=None, should_stop=stop)
    assert agree.calls[-1] == (False, True)


def test_bad_prompts_fail_before_the_first_forward(model):
    agree = Scripted(others=0)
    with pytest.raises(KodaError, match="prompt 0 is empty"):
        lockstep_generate(model, [[]], GenerationConfig(max_new_tokens=3), agree=agree)
    assert agree.calls == [(False, True)]


def test_contrastive_search_is_refused():
    with pytest.raises(ConfigError, match="greedy or sample"):
        lockstep_generate(None, [[5]], GenerationConfig(strategy="contrastive"))
