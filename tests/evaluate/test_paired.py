"""Per-task scores and the paired bootstrap of koda.evaluate.paired (tools/rl_compare.py's intervals)."""

import numpy as np
import pytest

from koda.errors import KodaError
from koda.evaluate.paired import paired_differences, paired_interval, task_scores


def _rows(passes: dict[str, list[bool]], **extra) -> list[dict]:
    return [{"task_id": t, "passed": p, "syntax_ok": True, **extra} for t, ps in passes.items() for p in ps]


def test_task_scores_average_each_tasks_samples_and_estimate_pass_at_k():
    rows = _rows({"a": [True, False, False, False], "b": [False] * 4})
    assert task_scores(rows, "passed") == {"a": 0.25, "b": 0.0}
    assert task_scores(rows, "pass@2") == {"a": 0.5, "b": 0.0}          # 1 - C(3,2)/C(4,2)
    assert task_scores(rows, "syntax_ok") == {"a": 1.0, "b": 1.0}


def test_tasks_without_a_growth_target_are_left_out_of_complexity_met():
    rows = [{"task_id": "a", "complexity_met": True}, {"task_id": "b", "complexity_met": None},
            {"task_id": "c", "complexity_met": False}]
    assert task_scores(rows, "complexity_met") == {"a": 1.0, "c": 0.0}


def test_differences_are_per_task_and_averaged_over_seeds():
    base = {"t1": 0.0, "t2": 1.0}
    runs = [({"t1": 1.0, "t2": 1.0}, base), ({"t1": 0.0, "t2": 0.0}, base)]
    assert paired_differences(runs).tolist() == [0.5, -0.5]
    with pytest.raises(KodaError, match="same tasks"):
        paired_differences([({"t1": 1.0}, base)])


def test_pairing_removes_the_task_difficulty_both_models_share():
    """Task difficulty varies 0..1, the variant is 0.1 better on every task: the paired
    interval is a point at 0.1; an unpaired bootstrap would span about +-0.13."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 0.9, size=72)
    diffs = paired_differences([({f"t{i}": d + 0.1 for i, d in enumerate(difficulty)},
                                 {f"t{i}": d for i, d in enumerate(difficulty)})])
    low, high = paired_interval(diffs)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_interval_covers_the_mean_and_excludes_zero_only_for_a_clear_gain():
    rng = np.random.default_rng(2)
    clear = rng.choice([0.0, 1.0], size=72, p=[0.7, 0.3])            # 30 % of tasks gained, none lost
    low, high = paired_interval(clear)
    assert 0 < low < clear.mean() < high
    noise = rng.choice([-1.0, 0.0, 1.0], size=72, p=[0.2, 0.6, 0.2])  # as many lost as gained
    low, high = paired_interval(noise)
    assert low < 0 < high
    wide, narrow = paired_interval(clear), paired_interval(clear, level=0.5)   # the level is honoured
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
