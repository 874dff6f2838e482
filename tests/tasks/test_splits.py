"""Splits that hold up: wide families, a held-out set fixed by the seed, no behavioural leak."""

import dataclasses
import random
import re

import pytest

from koda.errors import KodaError
from koda.tasks import FAMILIES, build_tasks, normal_form, sequences
from koda.tasks.behaviour import cases_from_test, load_function, matching, probe
from koda.tasks.check import overlaps


def _held(tasks):
    return [t for t in tasks if t.split == "heldout"]


@pytest.fixture(scope="module")
def big():
    return build_tasks(seed=0, train=64, heldout=3)


def test_sixty_four_train_tasks_per_family_build_with_no_overlap(big):
    train = [t for t in big if t.split == "train"]
    assert len(train) == 64 * len(FAMILIES) and len(_held(big)) == 3 * len(FAMILIES)
    assert overlaps(big) == []


def test_the_heldout_split_does_not_depend_on_the_train_size(big):
    at8 = _held(build_tasks(seed=0, train=8, heldout=3))
    assert at8 == _held(build_tasks(seed=0, train=18, heldout=3)) == _held(big)
    longer = {t.prompt for t in _held(build_tasks(seed=0, train=8, heldout=5))}
    assert {t.prompt for t in at8} <= longer


@pytest.mark.parametrize("family", ["power_naive", "power_fast", "merge_sort", "insertion_sort", "digit_sum"])
def test_widened_families_have_hundreds_of_instances(family):
    rng = random.Random(f"count:{family}")
    drafts = [FAMILIES[family].make(rng) for _ in range(1500)]
    assert len({normal_form(d.prompt() + d.body) for d in drafts}) >= 200


def test_every_reference_matches_its_own_tests_within_the_line_budget():
    """The guard must not cut a reference short on its own inputs (the costliest: naive
    recurrences at 15, divide and conquer at 1000), else no leak of its kind would be seen."""
    tasks = build_tasks(seed=2, train=1, heldout=1)
    for t in tasks:
        fn = load_function(t.program(), t.entry_point)
        assert matching(fn, [probe(t.program(), t.entry_point, t.test)]) == [0], t.task_id


def _quick_sort_with_pivot(task, pivot: str):
    """The same quicksort (same key) with another pivot expression: one function, new code."""
    body = re.sub(r"at = .*? % len", f"at = {pivot} % len", task.canonical_solution)
    prompt = re.sub(r"with the \w+ element as pivot", f"with element {pivot} as pivot", task.prompt)
    assert body != task.canonical_solution and prompt != task.prompt
    return dataclasses.replace(task, task_id="planted", split="train", prompt=prompt, canonical_solution=body)


def test_the_check_sees_a_quicksort_with_another_pivot():
    held = next(t for t in build_tasks(seed=0, train=0, heldout=3, families=["quick_sort"]))
    pivot = "1" if "at = 0 %" in held.canonical_solution else "0"
    planted = _quick_sort_with_pivot(held, pivot)
    assert normal_form(planted.program()) != normal_form(held.program())
    assert overlaps([planted, held]) == [("planted", held.task_id)]


def _with_body(task, body: str, sub: int, **changes):
    """The task with another reference and substitution cost, its tests' expected outputs
    recomputed from it."""
    fn = load_function(task.prompt + body, task.entry_point)
    lines = ["def check(candidate):"] + [f"    assert candidate({', '.join(map(repr, args))}) == {fn(*args)!r}"
                                         for args, _ in cases_from_test(task.test)]
    prompt = re.sub(r"substitutions \d+", f"substitutions {sub}", task.prompt)
    return dataclasses.replace(task, prompt=prompt, canonical_solution=body, test="\n".join(lines) + "\n", **changes)


def test_the_check_sees_an_edit_distance_whose_substitution_is_never_used():
    """A substitution dearer than a deletion plus an insertion is never taken: every such cost
    gives one function, however the code differs."""
    task = build_tasks(seed=0, train=0, heldout=1, families=["edit_distance"])[0]
    ins, dele, sub = map(int, re.search(r"insertions costing (\d+), deletions (\d+) and\s+substitutions (\d+)",
                                        task.prompt).groups())
    sub_step = f"{sub} + cost(i + 1, j + 1)"
    assert sub < ins + dele and sub_step in task.canonical_solution
    held = _with_body(task, task.canonical_solution.replace(sub_step, f"{ins + dele + 1} + cost(i + 1, j + 1)"),
                      ins + dele + 1)
    never = _with_body(task, task.canonical_solution.replace(sub_step, f"{ins + dele + 7} + cost(i + 1, j + 1)"),
                       ins + dele + 7, task_id="never", split="train")
    assert held.prompt != never.prompt
    assert normal_form(never.program()) != normal_form(held.program())
    assert overlaps([never, held]) == [("never", held.task_id)]


def test_build_refuses_a_train_draft_that_behaves_like_a_heldout_task(monkeypatch):
    """Quicksort instances that differ only in their pivot: every train draft computes the
    held-out task's function, so none may be taken."""
    monkeypatch.setattr(sequences, "_key", lambda rng: (("v", "by value"), 0))
    with pytest.raises(KodaError, match="'quick_sort' made only 0 distinct instances"):
        build_tasks(seed=0, train=1, heldout=1, families=["quick_sort"])


def test_train_up_to_takes_what_a_family_has_and_keeps_the_heldout_split():
    # without up_to the exhausted family is an error as soon as 2,000 draws in a row bring
    # nothing new, not after the 100,400 draws allowed for 5,000 tasks
    with pytest.raises(KodaError, match="distinct instances") as error:
        build_tasks(seed=0, train=5000, heldout=3, families=["bit_groups"])
    draws = int(re.search(r"in (\d+) draws", str(error.value)).group(1))
    assert draws < 20_000, str(error.value)
    tasks = build_tasks(seed=0, train=5000, heldout=3, families=["bit_groups"], train_up_to=True)
    train = [t for t in tasks if t.split == "train"]
    assert 100 < len(train) < 5000 and overlaps(tasks) == []
    assert _held(tasks) == _held(build_tasks(seed=0, train=8, heldout=3, families=["bit_groups"]))
    first = build_tasks(seed=0, train=8, heldout=3, families=["bit_groups"])
    assert [t.prompt for t in train[:8]] == [t.prompt for t in first if t.split == "train"]
