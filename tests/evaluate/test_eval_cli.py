"""``koda eval`` end to end on the TINY model and the KODA task set, and its one-line errors."""

import json

import pytest

from koda import cli


def _run(capsys, *argv):
    code = cli.main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sampled_report_per_family_and_overall(capsys, long_standalone_dir, tmp_path):
    out_file, samples = tmp_path / "report.json", tmp_path / "samples.jsonl"
    code, out, err = _run(capsys, "--model", str(long_standalone_dir), "--tasks", "koda:heldout", "--families",
                          "power_fast,gcd_lcm", "--heldout", "2", "--n", "3", "--temperature", "0.9",
                          "--max-new-tokens", "12", "--k", "1,3", "--budget", "0.5", "--out", str(out_file),
                          "--write-samples", str(samples), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads(out_file.read_text())
    assert set(report["families"]) == {"power_fast", "gcd_lcm"} and report["tasks"] == 4
    assert report["samples"] == 12 and {"pass@1", "pass@3", "complexity_met", "syntax_valid"} <= set(report)
    assert report["families"]["gcd_lcm"]["complexity_met"] is None  # no target in that family
    assert report["families"]["power_fast"]["complexity_samples"] == 6
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 12 and len({(r["task_id"], r["sample"]) for r in rows}) == 12
    # the scoring is the samples file's: scoring it again gives the same report figures
    code, out, err = _run(capsys, "--samples", str(samples), "--tasks", "koda:heldout", "--families",
                          "power_fast,gcd_lcm", "--heldout", "2", "--k", "1,3", "--budget", "0.5", "--json",
                          "--out", str(tmp_path / "again.json"))
    again = json.loads(out)
    assert code == 0 and all(again[k] == report[k] for k in ("pass@1", "pass@3", "syntax_valid", "samples"))


def test_references_as_samples_pass_everything(capsys, tmp_path):
    from koda.tasks import build_tasks

    tasks = [t for t in build_tasks(0, 1, 1, ["digit_sum", "edit_distance"]) if t.split == "heldout"]
    path = tmp_path / "refs.jsonl"
    path.write_text("".join(json.dumps({"task_id": t.task_id, "completion": t.canonical_solution}) + "\n"
                            for t in tasks))
    code, out, err = _run(capsys, "--samples", str(path), "--tasks", "koda:heldout", "--train", "1", "--heldout",
                          "1", "--k", "1", "--budget", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["pass@1"] == 1.0 and report["syntax_valid"] == 1.0 and report["complexity_met"] == 1.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "/no/such/dir", "--tasks", "koda:heldout"], "--model /no/such/dir: no such directory"),
    (["--samples", "/no/such.jsonl", "--tasks", "humaneval"], "cannot read"),
    (["--samples", "x.jsonl", "--tasks", "koda:dev"], "the KODA splits are koda:train and koda:heldout"),
    (["--samples", "x.jsonl", "--families", "nope"], "unknown task family 'nope'"),
    (["--samples", "x.jsonl", "--k", "0"], "every k must be >= 1"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_greedy_with_several_samples_and_unknown_task_ids_are_refused(capsys, long_standalone_dir, tmp_path):
    code, _, err = _run(capsys, "--model", str(long_standalone_dir), "--families", "range_sum", "--n", "3")
    assert code == 2 and "--temperature 0 is greedy decoding" in err
    bad = tmp_path / "s.jsonl"
    bad.write_text(json.dumps({"task_id": "HumanEval/999", "completion": ""}) + "\n")
    code, _, err = _run(capsys, "--samples", str(bad), "--tasks", "humaneval")
    assert code == 2 and "s.jsonl:1: task_id 'HumanEval/999' is not in the task set" in err


def test_a_run_directory_logs_to_wandb_without_printing_its_summary(capfd, monkeypatch, long_standalone_dir,
                                                                     tmp_path):
    """--model a run directory: the report goes to the run's W&B run (offline here), and the
    terminal shows the table only. The run's checkpoint is stood in for by the standalone
    model, so only the loading is skipped."""
    from koda.infer import loading

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"logging": {"wandb_mode": "offline"}}))
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda path, *rest: real_load(long_standalone_dir, *rest))
    monkeypatch.setenv("WANDB_MODE", "offline")
    code = cli.main(["eval", "--model", str(run), "--tasks", "koda:heldout", "--families", "power_fast",
                     "--heldout", "1", "--max-new-tokens", "8", "--no-measure"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["family", "tasks", "samples"], out    # the table comes first
    assert not [line for line in (out + err).splitlines() if "wandb" in line.lower()], out + err
    runs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and b"eval/koda-heldout/pass@1" in runs[0].read_bytes()
