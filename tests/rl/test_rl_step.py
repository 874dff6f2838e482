"""The RL step end to end on two ranks: TINY actor (ZeRO-3 + AutoEP), critic, encoder."""

import pytest

from koda.rl.rewards import COMPONENTS
from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow

EXPECTED = ({f"rl/reward/{c}" for c in COMPONENTS}
            | {"rl/policy_loss", "rl/value_loss", "rl/kl", "rl/entropy", "rl/ce", "gan/wasserstein", "gan/gp",
               "gan/generator_loss"}
            | {f"time/{t}" for t in ("generation", "judging", "actor_fwd", "actor_bwd", "critic_fwd",
                                      "critic_bwd", "encoder_fwd", "encoder_bwd")})


@pytest.fixture(scope="module")
def two_steps(tiny_data, tmp_path_factory):
    return run_ranks("tests.helpers.rl_jobs:two_rl_steps", {"tokenizer": tiny_data.tokenizer},
                     tmp_path_factory.mktemp("rl-step"))


def test_every_metric_is_logged_and_finite(two_steps):
    for r in two_steps:
        assert len(r["metrics"]) == 2
        for metrics in r["metrics"]:
            assert set(metrics) >= EXPECTED, EXPECTED - set(metrics)
        assert r["finite"], r["metrics"]
        assert r["metrics"][0]["gan/gp"] > 0 and r["metrics"][0]["rl/entropy"] > 0


def test_critic_starts_at_zero_value_under_partitioned_construction(two_steps):
    for r in two_steps:
        assert r["metrics"][0]["rl/value_mean"] == 0.0         # zero head: V = 0 before the first update
        assert r["metrics"][1]["rl/value_mean"] != 0.0         # ... and the update moved it


def test_re_forward_log_probs_match_the_rollout(two_steps):
    # One PPO epoch: the actor being updated is the policy that sampled, so the ratio is 1 up
    # to float error; a log-prob misaligned by one token (or of the wrong temperature) is not.
    for r in two_steps:
        for metrics in r["metrics"]:
            assert metrics["rl/kl"] < 1e-4 and metrics["rl/clip_fraction"] == 0.0, metrics


def test_every_engine_trains(two_steps):
    for r in two_steps:
        assert r["engines"] == ["actor", "critic", "encoder"]
        for name, moved in r["moved"].items():
            assert moved > 1e-6, f"{name} weights did not change"


def test_ranks_agree_on_logged_metrics_and_take_their_own_prompts(two_steps):
    r0, r1 = two_steps
    assert r0["metrics"] == r1["metrics"]
    for s in range(2):
        assert not set(r0["prompts"][s]) & set(r1["prompts"][s])       # disjoint slices per step


@pytest.mark.parametrize("experts", ["local", "parallel"])
def test_group_advantages_run_the_actor_alone_with_kl_to_the_reference_in_the_loss(tiny_data, tmp_path, experts):
    # local: rollouts and the reference on replicas with every expert; parallel: AutoEP's
    # all-to-all in every decode step and the reference engine's forward
    r0, r1 = run_ranks("tests.helpers.rl_jobs:two_rl_steps",
                       {"tokenizer": tiny_data.tokenizer, "advantage": "grpo", "steps": 1, "lvw": 0.0,
                        "kl_coef": 0.1, "kl_in": "loss", "rollout_experts": experts}, tmp_path)
    for r in (r0, r1):
        assert r["engines"] == ["actor"] and r["reference"] and r["finite"]
        # the actor starts as the reference: KL ~ 0, but the term is computed (and logged)
        assert abs(r["metrics"][0]["rl/kl_ref_loss"]) < 1e-5 and abs(r["metrics"][0]["rl/kl_ref"]) < 1e-5
        assert not any(k.startswith(("gan/", "rl/value", "time/critic", "time/encoder")) for k in r["metrics"][0])
        assert r["moved"]["actor"] > 1e-6
    assert r0["metrics"] == r1["metrics"]
