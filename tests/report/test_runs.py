"""Reading run directories: series per key, and forgiving only what a live or killed run leaves."""

import json

import pytest

from koda.errors import KodaError
from koda.report.runs import load_run, load_runs, run_names
from tests.report.synthetic import write_run


def test_series_per_key_with_sparse_validation(tmp_path):
    run = load_run(write_run(tmp_path / "a", steps=40, log_every=2, eval_every=10))
    assert run.name == "a"
    assert run.scalars["train/ce"].steps == tuple(range(2, 41, 2))
    assert run.scalars["val/loss"].steps == (10, 20, 30, 40)
    assert run.vectors["moe/layer1/tokens"] == (40, (200.0, 300.0, 400.0, 500.0))
    assert run.times.values[-1] - run.times.values[0] == 76.0
    assert run.config["model"]["n_experts"] == 4 and run.ds_config["zero_optimization"]["stage"] == 3
    assert run.warnings == []


def test_by_step_regroups_the_scalars_a_row_per_step(tmp_path):
    run = load_run(write_run(tmp_path / "a", steps=20, log_every=5, eval_every=10))
    run.scalars = {"val/loss": run.scalars["val/loss"], **run.scalars}      # a sparse key first
    rows = run.by_step()
    assert list(rows) == [5, 10, 15, 20]
    assert rows[10]["val/loss"] == run.scalars["val/loss"].values[0]
    assert rows[10]["train/ce"] == run.scalars["train/ce"].values[1]
    assert "val/loss" not in rows[5]


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    path = write_run(tmp_path / "killed", steps=10)
    with (path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 12, "time": 1024.0, "train/loss": 3.')        # killed mid-write, no newline
    run = load_run(path)
    assert run.scalars["train/loss"].steps[-1] == 10
    assert run.warnings == ["last line 6 is truncated (run killed mid-write?): skipped"]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = write_run(tmp_path / "r", steps=4)
    (path / "metrics.jsonl").write_text((path / "metrics.jsonl").read_text().rstrip("\n"))
    run = load_run(path)
    assert run.scalars["train/loss"].steps == (2, 4) and run.warnings == []


def test_bad_lines_and_values_are_skipped_and_reported(tmp_path):
    path = tmp_path / "r"
    path.mkdir()
    lines = ['{"step": 1, "train/loss": 5.0, "note": "hello", "flag": true}',
             "not json at all",
             '["a list"]',
             '{"step": 2, "train/loss": null, "moe/layer0/tokens": [1, 2]}',
             '{"step": 3, "train/loss": NaN}',
             '{"step": 4, "train/loss": 4.0}',
             '{"step": 4, "train/loss": 3.5}',                              # a step logged twice: the later wins
             '{"train/loss": 1.0}']                                          # no step
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(path)
    assert run.scalars["train/loss"].steps == (1, 4)
    assert run.scalars["train/loss"].values == (5.0, 3.5)
    assert run.vectors["moe/layer0/tokens"] == (2, (1.0, 2.0))
    assert "flag" not in run.scalars and "note" not in run.scalars
    assert "3 malformed line(s) skipped (line 2, 3, 8)" in run.warnings
    assert "train/loss: 2 NaN/inf value(s) skipped (step 2, 3)" in run.warnings
    assert "note: 1 non-numeric value(s) skipped" in run.warnings
    assert "flag: 1 non-numeric value(s) skipped" in run.warnings
    assert "no config.json: its highlights are left out" in run.warnings


def test_unreadable_config_is_a_warning_not_an_error(tmp_path):
    path = write_run(tmp_path / "r", steps=4)
    (path / "ds_config.json").write_text("{broken")
    (path / "config.json").write_text("[1, 2]")
    run = load_run(path)
    assert run.config is None and run.ds_config is None
    assert run.warnings == ["config.json is not a JSON object: its highlights are left out",
                            "ds_config.json is unreadable (JSONDecodeError): its highlights are left out"]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: None, r"^run directory .*/gone does not exist$"),
    (lambda p: p.write_text("x"), r"^.*/gone is not a directory \(expected a run directory holding metrics.jsonl\)$"),
    (lambda p: p.mkdir(), r"^.*/gone: no metrics.jsonl \(not a KODA run directory, or no step logged yet\)$"),
    (lambda p: (p.mkdir(), (p / "metrics.jsonl").write_text("")), r"^.*metrics.jsonl is empty: nothing to report$"),
    (lambda p: (p.mkdir(), (p / "metrics.jsonl").write_text('{"step": 1, "tr')),
     r"^.*metrics.jsonl is without a single readable line: nothing to report$"),
    (lambda p: (p.mkdir(), (p / "metrics.jsonl").write_text(json.dumps({"step": 1, "a": "b"}) + "\n")),
     r"^.*metrics.jsonl has no numeric metric values: nothing to report$"),
])
def test_nothing_to_report_is_a_one_line_error(tmp_path, setup, message):
    setup(tmp_path / "gone")
    with pytest.raises(KodaError, match=message) as err:
        load_run(tmp_path / "gone")
    assert "\n" not in str(err.value)


def test_two_runs_load_their_own_series_and_names_differ(tmp_path):
    a = write_run(tmp_path / "exp1" / "run", steps=20)
    b = write_run(tmp_path / "exp2" / "run", steps=30, offset=0.5)
    runs = load_runs([a, b])
    assert [r.name for r in runs] == ["exp1/run", "exp2/run"]
    assert runs[0].scalars["train/ce"].steps[-1] == 20 and runs[1].scalars["train/ce"].steps[-1] == 30
    assert runs[1].scalars["train/ce"].values[0] - runs[0].scalars["train/ce"].values[0] == pytest.approx(0.5)


def test_run_names():
    assert run_names(["/x/a", "/y/b"]) == ["a", "b"]
    assert run_names(["/x/a", "/x/a"]) == ["a #1", "a #2"]
