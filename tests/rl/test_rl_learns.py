"""The RL loop learns: GRPO on two ranks (ZeRO-3 + AutoEP) raises the pass rate of a task
family the TINY policy solves by chance (tests.helpers.rl_learning_jobs).

The policy starts writing each of three bodies about one time in three for every prompt;
after a few dozen GRPO steps it must write the right one for each prompt more often, and
greedily always. The run fails if the policy gradient's sign is flipped (the pass rate
falls), if rewards reach the wrong samples or advantages are taken per sample (no signal: it
stays at chance), or if groups mix prompts (``add``, whose rewards sit in a narrow band,
does not rise). Prompts start with the end-of-text token, as ``koda eval`` gives them; with
that context the TINY policy collapses onto one body for every prompt at lr 1e-3 (and 5e-4),
so the test runs lr 3e-4 for 40 steps. Measured on two CPU ranks (pass rate over the first
-> last 4 steps): sampling seeds 1 and 2: 0.33 -> 0.71, 0.30 -> 0.81, every prompt up by
>= 0.29, greedy probe 1/3 -> 1. Wrong implementations (seed 1): sign flipped 0.33 -> 0.00;
one batch-wide group 0.39 -> 0.60 with add 0.34 -> 0.03 (probe 2/3); per-sample groups 0.39 ->
0.32; rewards shifted by one sample 0.33 -> 0.34 (sub and mul fall to 0.08 and 0.06).
"""

import pytest

from tests.helpers.ranks import run_ranks
from tests.helpers.rl_learning_jobs import BODIES

pytestmark = pytest.mark.slow
STEPS, WINDOW, LR = 40, 4, 3e-4   # pass rates compared over the first and the last WINDOW steps


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
    return run_ranks("tests.helpers.rl_learning_jobs:grpo_run",
                     {"tokenizer": tiny_data.tokenizer, "steps": STEPS, "lr": LR}, tmp_path_factory.mktemp("rl-learns"))


def test_grpo_raises_the_pass_rate_of_every_prompt(grpo):
    first, last = _rates(grpo, range(WINDOW)), _rates(grpo, range(STEPS - WINDOW, STEPS))
    assert set(first) == {f"arith/{name}" for name in BODIES} | {"all"}
    assert first["all"] <= 0.55, (first, last)               # the start is chance (1/3), not solved
    assert last["all"] >= 0.65 and last["all"] - first["all"] >= 0.3, (first, last)
    for task_id in first:                                     # every prompt, add's narrow band too
        assert last[task_id] >= 0.4 and last[task_id] - first[task_id] >= 0.2, (task_id, first, last)


def test_the_greedy_probe_solves_every_prompt_after_training(grpo):
    """koda.rl.probe on the same tasks: below 1 at the chance start, every prompt solved
    greedily at the end (each is sampled right >= 0.86 of the time by then)."""
    before, after = grpo[0]["probe"]
    assert before["probe/pass_rate"] < 1.0 and after["probe/pass_rate"] == 1.0, (before, after)
    assert after["probe/syntax_valid"] == 1.0
    assert grpo[1]["probe"] == grpo[0]["probe"]              # summed over ranks: the same everywhere


def test_grpo_raises_the_mean_test_reward(grpo):
    reward = [m["rl/reward/tests"] for m in grpo[0]["metrics"]]
    early, late = sum(reward[:WINDOW]) / WINDOW, sum(reward[-WINDOW:]) / WINDOW
    assert late >= early + 0.2, reward
    assert grpo[0]["metrics"] == grpo[1]["metrics"]          # averaged over ranks: the same everywhere
