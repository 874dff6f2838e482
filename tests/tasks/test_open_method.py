"""koda.tasks.open_method: the naive and the efficient program both pass; only the efficient one
meets the target (the real judge and verifier, as koda eval and the complexity reward use them)."""

import pytest

from koda.tasks import FAMILIES, build_tasks, family_names

NAIVE = {
    # one multiplication per call: Θ(n), the prompt's x ** n mod m without squaring
    "power_open": "    if {n} == 0:\n        return 1 % {m}\n    return {x} * {f}({x}, {n} - 1) % {m}\n",
}


def _naive_recursion(task) -> str:
    """The recurrence read off the docstring as code: the reference's loop rule, called recursively."""
    import re

    body = task.canonical_solution
    first = re.search(r"vals = (\[.*?\])", body).group(1)
    rule = re.search(r"vals\.append\((.*)\)", body).group(1)
    p = task.prompt.split("(")[1].split(")")[0]
    call = re.sub(r"vals\[i - (\d+)\]", rf"{task.entry_point}({p} - \1)", rule)
    return f"    if {p} < len({first}):\n        return {first}[{p}]\n    return {call}\n"


def test_open_method_families_are_built_only_when_named():
    assert "power_open" not in family_names() and "power_open" not in FAMILIES
    assert family_names(["power_open", "recurrence_open"]) == ["power_open", "recurrence_open"]
    tasks = build_tasks(seed=0, train=4, heldout=3, families=["power_open", "recurrence_open"])
    assert len(tasks) == 14 and {t.family for t in tasks} == {"power_open", "recurrence_open"}
    for t in tasks:       # the docstring leaves the method open
        assert not any(w in t.prompt for w in ("squaring", "bottom-up", "recursively", "multiplication", "O("))


@pytest.mark.slow
def test_naive_and_efficient_both_pass_and_only_the_efficient_meets_the_target():
    import re

    from koda.evaluate.score import score

    tasks = [t for t in build_tasks(seed=0, train=0, heldout=2, families=["power_open", "recurrence_open"])]
    samples = []
    for t in tasks:
        if t.family == "power_open":
            x, n = t.prompt.split("(")[1].split(")")[0].split(", ")
            m = re.search(r"modulo (\d+)", t.prompt).group(1)
            naive = NAIVE["power_open"].format(n=n, m=m, x=x, f=t.entry_point)
        else:
            naive = _naive_recursion(t)
        samples += [{"task_id": t.task_id, "completion": t.canonical_solution},
                    {"task_id": t.task_id, "completion": naive}]
    _, rows = score(tasks, samples, [1], measure=True)
    efficient, naive = rows[0::2], rows[1::2]
    assert all(r["passed"] for r in rows), rows
    assert all(r["complexity_met"] for r in efficient), efficient
    assert not any(r["complexity_met"] for r in naive), naive
