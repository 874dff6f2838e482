"""The RL loop learns: GRPO on two ranks (ZeRO-3 + AutoEP) raises the pass rate of a task
family the TINY policy solves by chance (tests.helpers.rl_learning_jobs).

The policy starts writing each of three bodies about one time in three for every prompt;
after a few dozen GRPO steps it must write the right one for each prompt. The run fails if
the policy gradient's sign is flipped (the pass rate falls), if rewards reach the wrong
samples or advantages are taken per sample (no signal: it stays at chance), or if groups mix
prompts (``add``, whose rewards sit in a narrow band, falls). Measured on two CPU ranks
(pass rate over the first -> last 4 of 20 steps): right 0.40 -> 0.91 (each prompt >= 0.86;
sampling seeds 2 and 3: 0.35 -> 0.93, 0.31 -> 0.84); sign flipped 0.17 -> 0.00; rewards
reversed per chunk 0.31 -> 0.15, shifted by one sample 0.35 -> 0.25; per-sample groups
0.32 -> 0.37; groups across prompts 0.35 -> 0.63 with add at 0.00, one batch-wide group
0.40 -> 0.64 with add at 0.02.
"""

import pytest

from tests.helpers.ranks import run_ranks
from tests.helpers.rl_learning_jobs import BODIES

pytestmark = pytest.mark.slow
STEPS, WINDOW = 20, 4          # pass rates compared over the first and the last WINDOW steps


def _rates(ranks: list[dict], steps: range) -> dict[str, float]:
    """task id -> share of both ranks' samples in `steps` that wrote the task's body; "all": pooled."""
    seen: dict[str, list[bool]] = {}
    for r in ranks:
        for s in steps:
            for task_id, passed, _ in r["samples"][s]:
                seen.setdefault(task_id, []).append(passed)
    rates = {k: sum(v) / len(v) for k, v in seen.items()}
    return rates | {"all": sum(sum(v) for v in seen.values()) / sum(len(v) for v in seen.values())}


@pytest.fixture(scope="module")
def grpo(tiny_data, tmp_path_factory):
    return run_ranks("tests.helpers.rl_learning_jobs:grpo_run", {"tokenizer": tiny_data.tokenizer, "steps": STEPS},
                     tmp_path_factory.mktemp("rl-learns"))


def test_grpo_raises_the_pass_rate_of_every_prompt(grpo):
    first, last = _rates(grpo, range(WINDOW)), _rates(grpo, range(STEPS - WINDOW, STEPS))
    assert set(first) == {f"arith/{name}" for name in BODIES} | {"all"}
    assert first["all"] <= 0.55, (first, last)               # the start is chance (1/3), not solved
    assert last["all"] >= 0.75 and last["all"] - first["all"] >= 0.3, (first, last)
    for task_id in first:
        assert last[task_id] >= 0.6, (task_id, first, last)


def test_grpo_raises_the_mean_test_reward(grpo):
    reward = [m["rl/reward/tests"] for m in grpo[0]["metrics"]]
    early, late = sum(reward[:WINDOW]) / WINDOW, sum(reward[-WINDOW:]) / WINDOW
    assert late >= early + 0.2, reward
    assert grpo[0]["metrics"] == grpo[1]["metrics"]          # averaged over ranks: the same everywhere
