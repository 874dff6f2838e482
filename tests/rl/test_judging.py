"""Judging on a background thread (``koda.rl.judging``) and the verifier only where it counts."""

import threading

import pytest

import koda.judge
from koda.rl import judging
from koda.rl.judging import JudgeTiming, OverlappedJudge
from koda.rl.rewards import RewardSample, RewardWeights, score
from koda.sandbox import SandboxPool
from tests.rl.test_rewards import COMPLETIONS, POLICY, PROMPT, REF, TARGET, TESTS


def _samples(names):
    return [RewardSample(PROMPT + COMPLETIONS[n], PROMPT + REF, TESTS, "fast_power", TARGET) for n in names]


def test_chunks_come_back_in_submission_order_and_equal_one_call():
    weights = RewardWeights()
    with SandboxPool(workers=2, policy=POLICY) as pool, OverlappedJudge(weights, pool=pool, budget_s=1.0) as judge:
        judge.submit(_samples(["wrong", "perfect"]))
        judge.submit(_samples(["syntax"]))
        rewards, timing = judge.collect()
        direct = score(_samples(["wrong", "perfect", "syntax"]), weights, pool=pool, budget_s=1.0)
    assert [r.components["tests"] for r in rewards] == [0.25, 1.0, 0.0]
    assert [r.total for r in rewards] == pytest.approx([r.total for r in direct])
    assert timing.busy_s > 0 and 0.0 <= timing.hidden_fraction <= 1.0


def test_submit_returns_while_the_judge_is_still_working(monkeypatch):
    """The rank's thread must not block on the judge: submit() returns with scoring pending."""
    release, started = threading.Event(), threading.Event()

    def blocking_score(samples, *args, **kwargs):
        started.set()
        assert release.wait(30)
        return [f"reward of {s}" for s in samples]

    monkeypatch.setattr(judging, "score", blocking_score)
    with OverlappedJudge(RewardWeights()) as judge:
        judge.submit(["a", "b"])
        assert started.wait(30)          # the judge thread is inside score() ...
        judge.submit(["c"])              # ... and the caller goes on
        release.set()
        rewards, timing = judge.collect()
    assert rewards == ["reward of a", "reward of b", "reward of c"]
    assert timing.busy_s > 0


def test_with_two_workers_batches_are_judged_at_once_and_return_in_submission_order(monkeypatch):
    """The RL step submits each decode step's finished samples as a batch: a batch must not
    wait for an earlier one still in the sandbox, and rewards still come back in order."""
    first_started, second_done = threading.Event(), threading.Event()

    def scored(samples, *args, **kwargs):
        if samples == ["slow"]:
            first_started.set()
            assert second_done.wait(30)          # finishes only once the later batch has been judged
        else:
            assert first_started.wait(30)
            second_done.set()
        return [f"reward of {s}" for s in samples]

    monkeypatch.setattr(judging, "score", scored)
    with OverlappedJudge(RewardWeights(), workers=2) as judge:
        judge.submit(["slow"])
        judge.submit(["quick", "quicker"])
        rewards, _ = judge.collect()
    assert rewards == ["reward of slow", "reward of quick", "reward of quicker"]


def test_a_judge_error_reaches_the_caller(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("sandbox down")

    monkeypatch.setattr(judging, "score", broken)
    with OverlappedJudge(RewardWeights()) as judge:
        judge.submit(["a"])
        with pytest.raises(RuntimeError, match="sandbox down"):
            judge.collect()
        assert judge.collect()[0] == []          # the failed chunk is not returned twice


def test_hidden_fraction():
    assert JudgeTiming(busy_s=4.0, wait_s=1.0).hidden_fraction == 0.75
    assert JudgeTiming(busy_s=2.0, wait_s=3.0).hidden_fraction == 0.0
    assert JudgeTiming(busy_s=0.0, wait_s=0.0).hidden_fraction == 1.0


def test_verifier_runs_only_for_programs_that_pass_every_test(monkeypatch):
    asked = []
    real = koda.judge.judge

    def counting(submissions, **kwargs):
        asked.extend(s.program for s in submissions if s.complexity)
        return real(submissions, **kwargs)

    monkeypatch.setattr(koda.judge, "judge", counting)
    with SandboxPool(workers=2, policy=POLICY) as pool:
        rewards = score(_samples(["perfect", "wrong", "syntax"]), RewardWeights(), pool=pool, budget_s=1.0)
    assert asked == [PROMPT + REF]
    assert rewards[0].components["complexity"] == 1.0 and rewards[1].components["complexity"] == 0.0
