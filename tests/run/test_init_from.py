"""``koda train --init-from``: weights from a run or a converted directory, fresh optimizer and schedule."""

import dataclasses
import json

import pytest

from koda.checkpoint import save_standalone
from koda.cli import main
from koda.model import KodaForCausalLM
from tests.helpers.ranks import launch
from tests.helpers.tiny import TINY, write_run_config


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _val(records, step):
    return next(r["val/loss"] for r in records if r["step"] == step and "val/loss" in r)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_source_weights_with_a_fresh_schedule(tiny_data, tmp_path):
    source = tmp_path / "source"
    config = write_run_config(tmp_path / "source.yaml", tiny_data, source, steps=6)
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    src = _metrics(source)
    assert main(["convert", str(source), "--output", str(tmp_path / "converted")]) == 0

    for name, init in (("from-run", source), ("from-converted", tmp_path / "converted")):
        run = tmp_path / name
        config = write_run_config(tmp_path / f"{name}.yaml", tiny_data, run, steps=2)
        proc = launch(["koda.train", "--config", str(config), "--init-from", str(init)])
        assert proc.returncode == 0, proc.stderr[-4000:]
        tuned = _metrics(run)
        # step 0 is evaluated before any update: the source's final weights, not the seeded init
        assert _val(tuned, 0) == pytest.approx(_val(src, 6), abs=1e-5)
        assert abs(_val(tuned, 0) - _val(src, 0)) > 0.1
        # a fresh schedule: step 1's learning rate is the source's step 1, not its step 7
        lr = lambda rs, s: next(r["train/lr"] for r in rs if r["step"] == s and "train/lr" in r)
        assert lr(tuned, 1) == pytest.approx(lr(src, 1))
        assert (run / "checkpoints" / "latest").read_text() == "step00000002"


def test_bad_init_sources_are_one_line_errors_before_any_rank_starts(tiny_data, tmp_path, capsys):
    config = write_run_config(tmp_path / "run.yaml", tiny_data, tmp_path / "run", steps=2)
    other = tmp_path / "other"
    save_standalone(KodaForCausalLM(dataclasses.replace(TINY, max_seq_len=128)), other)
    cases = [
        (["--init-from", str(tmp_path / "nope")], "--init-from " + str(tmp_path / "nope") + ": no such directory"),
        (["--init-from", str(tmp_path)], "neither a converted model"),
        (["--init-from", str(other)], "model.max_seq_len is 128 there, 64 in this run's config"),
        (["--init-from", str(other), "--resume"], "cannot be combined with --resume"),
    ]
    for extra, message in cases:
        assert main(["train", "--config", str(config), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()
