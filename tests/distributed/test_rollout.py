"""Rollouts from the 2-rank ZeRO-3 + AutoEP actor, with the experts where AutoEP keeps them
(all-to-all per token, lockstep) and with every expert gathered on every rank (no collective
per token): training in between, same tokens as the standalone model. Each fixture is one
real DeepSpeed launch (tests.helpers.rollout_jobs)."""

import pytest

from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["parallel", "local"])
def lockstep(request, tmp_path_factory):
    experts = request.param
    return experts, run_ranks("tests.helpers.rollout_jobs:lockstep_rollouts", {"experts": experts},
                              tmp_path_factory.mktemp(f"rollout-{experts}"))


def test_ranks_of_different_lengths_train_and_generate_again(lockstep):
    experts, (r0, r1) = lockstep
    assert r0["shape"] == [3, 12] and r1["shape"] == [2, 3]       # different lengths per rank
    if experts == "parallel":
        assert r0["steps"] == r1["steps"] == 11                    # rank 1 ran 8 dummy steps
    else:
        assert (r0["steps"], r1["steps"]) == (11, 2)               # no collective per step: no dummy steps
    assert all(len(r["losses"]) == 4 for r in (r0, r1))            # two phases, four training steps, no hang
    assert r0["sample_lengths"] == [12, 12] and r1["sample_lengths"] == [3, 3]


def test_greedy_tokens_equal_the_standalone_model_before_and_after_training(lockstep):
    for r in lockstep[1]:
        assert r["greedy_equal_before"], r
        assert r["weights_moved"] > 1e-3, "the training steps did not change the weights; the check proves nothing"
        assert r["greedy_equal_after"], r


def test_logprobs_are_the_sampled_tokens_log_probabilities(lockstep):
    for r in lockstep[1]:
        assert r["logprob_max_err"] < 1e-4
        assert r["logprobs_grad_free"]


def test_sampling_is_reproducible_and_differs_between_ranks_and_steps(lockstep):
    r0, r1 = lockstep[1]
    assert r0["sample_reproducible"] and r1["sample_reproducible"]
    assert r0["sample_changes_with_step"] and r1["sample_changes_with_step"]
    assert r0["sample_first3"] != r1["sample_first3"]              # same prompts, rank folded into the seed


def test_rollout_leaves_router_probe_and_autoep_load_alone(lockstep):
    for r in lockstep[1]:
        assert r["probe_untouched"] and r["autoep_load_untouched"]


def test_an_error_on_one_rank_is_an_error_on_every_rank(tmp_path):
    r0, r1 = run_ranks("tests.helpers.rollout_jobs:failure_on_one_rank", {}, tmp_path)
    assert r1["error"] == "rollout failed on rank 1 at step 2: stop test exploded"
    assert r0["error"] == "rollout stopped at step 2: rank(s) 1 failed"
    assert r0["after"] == r1["after"][:2]                          # the next rollout and training step pair up
    assert r0["loss"] > 0 and r1["loss"] > 0


def test_an_error_on_one_rank_is_an_error_on_every_rank_with_local_experts(tmp_path):
    r0, r1 = run_ranks("tests.helpers.rollout_jobs:failure_on_one_rank", {"experts": "local"}, tmp_path)
    assert r1["error"] == "rollout failed on rank 1 at step 2: stop test exploded"
    assert r0["error"] == "rollout stopped: rank(s) 1 failed"      # after its own decode: the ranks meet once
    assert r0["after"] == r1["after"][:2]                          # the next rollout and training step pair up
    assert r0["loss"] > 0 and r1["loss"] > 0
