"""koda.tasks.open_method: the naive and the efficient program both pass; only the efficient one
meets the target (the real judge and verifier, as koda eval and the complexity reward use them)."""

import pytest

from koda.tasks import FAMILIES, build_tasks, family_names
from koda.tasks.open_method import naive_body


def test_open_method_families_are_built_only_when_named():
    assert "power_open" not in family_names() and "power_open" not in FAMILIES
    assert family_names(["power_open", "recurrence_open"]) == ["power_open", "recurrence_open"]
    tasks = build_tasks(seed=0, train=4, heldout=3, families=["power_open", "recurrence_open"])
    assert len(tasks) == 14 and {t.family for t in tasks} == {"power_open", "recurrence_open"}
    for t in tasks:       # the docstring leaves the method open
        assert not any(w in t.prompt for w in ("squaring", "bottom-up", "recursively", "multiplication", "O("))


@pytest.mark.slow
def test_naive_and_efficient_both_pass_and_only_the_efficient_meets_the_target():
    from koda.evaluate.score import score

    tasks = [t for t in build_tasks(seed=0, train=0, heldout=2, families=["power_open", "recurrence_open"])]
    samples = []
    for t in tasks:
        samples += [{"task_id": t.task_id, "completion": t.canonical_solution},
                    {"task_id": t.task_id, "completion": naive_body(t)}]
    _, rows = score(tasks, samples, [1], measure=True)
    efficient, naive = rows[0::2], rows[1::2]
    assert all(r["passed"] for r in rows), rows
    assert all(r["complexity_met"] for r in efficient), efficient
    assert not any(r["complexity_met"] for r in naive), naive


def test_both_ways_documents_answer_each_open_task_with_both_programs(tmp_path):
    import json

    from koda.tasks.cli import main

    out = tmp_path / "docs.jsonl"
    main(["export", "--families", "power_open,recurrence_open,range_sum", "--train", "3", "--heldout", "2",
          "--split", "train", "--documents", "--both-ways", "--out", str(out)])
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    tasks = build_tasks(seed=0, train=3, heldout=2, families=["power_open", "recurrence_open", "range_sum"])
    train = [t for t in tasks if t.split == "train"]
    open_tasks = [t for t in train if t.family != "range_sum"]
    assert len(texts) == len(train) + len(open_tasks)
    for t in open_tasks:     # the reference and the naive program, after the same prompt
        assert t.program() in texts and t.program(naive_body(t)) in texts
        assert naive_body(t) != t.canonical_solution and f"{t.entry_point}(" in naive_body(t)
    assert sum(t.family == "range_sum" and t.program() in texts for t in train) == 3


def test_both_ways_without_documents_is_refused(tmp_path):
    from koda.errors import KodaError
    from koda.tasks.cli import main

    with pytest.raises(KodaError, match="--documents"):
        main(["export", "--families", "power_open", "--both-ways", "--out", str(tmp_path / "x.jsonl")])
