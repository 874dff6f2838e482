"""A non-finite loss stops the run with one line naming the step (or, configured, the step
is skipped and counted); no checkpoint ever holds a non-finite value. The non-finite loss
is genuine: a learning rate of 1e30 makes the first real update blow the weights up, and
the next forward overflows."""

import json
import re

import pytest
import torch

from koda.checkpoint.zero3 import Zero3Checkpoint
from koda.distributed import checkpoint
from tests.helpers.ranks import launch
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow
STEPS = 6


def _exploding_run(tmp_path, tiny_data, name, **train):
    config = write_run_config(tmp_path / f"{name}.yaml", tiny_data, tmp_path / name, steps=STEPS,
                              train={"checkpoint_every": 1, "keep_checkpoints": 100, "eval_every": 100, **train})
    ds_path = config.with_suffix(".ds.json")
    ds = json.loads(ds_path.read_text())
    ds["optimizer"]["params"]["lr"] = 1e30
    ds_path.write_text(json.dumps(ds))
    return config, tmp_path / name


def _tensors(checkpoints, tag) -> dict:
    reader = Zero3Checkpoint(checkpoints / tag / "actor")
    return {name: reader.tensor(name) for name in reader.shapes}


def test_a_non_finite_loss_stops_the_run_naming_the_step(tiny_data, tmp_path):
    config, run_dir = _exploding_run(tmp_path, tiny_data, "stop")
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("koda train: error:")]
    assert errors, proc.stderr[-3000:]
    match = re.fullmatch(r"koda train: error: step (\d+): non-finite (loss|gradient norm.*); stopped without saving "
                         r"it \(train.on_nonfinite=stop; last checkpoint: (step\d+)\)", errors[0])
    assert match, errors[0]
    bad = int(match.group(1))
    assert 1 < bad < STEPS and match.group(3) == checkpoint.tag_for(bad - 1)
    checkpoints = run_dir / "checkpoints"
    assert checkpoint.complete_tags(checkpoints) == [checkpoint.tag_for(s) for s in range(1, bad)]
    for tag in checkpoint.complete_tags(checkpoints):
        assert all(torch.isfinite(t).all() for t in _tensors(checkpoints, tag).values()), tag
    logged = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == bad - 1


def test_skip_mode_counts_discarded_steps_and_keeps_the_weights(tiny_data, tmp_path):
    config, run_dir = _exploding_run(tmp_path, tiny_data, "skip", on_nonfinite="skip")
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = [int(s) for s in re.findall(r"step (\d+): non-finite .*, update discarded", proc.stdout)]
    assert skipped and skipped == list(range(skipped[0], STEPS + 1)), proc.stdout[-3000:]
    records = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    assert records[STEPS]["train/skipped_steps"] == len(skipped)
    assert records[skipped[0] - 1]["train/skipped_steps"] == 0
    checkpoints = run_dir / "checkpoints"
    last_good = _tensors(checkpoints, checkpoint.tag_for(skipped[0] - 1))
    final = _tensors(checkpoints, checkpoint.tag_for(STEPS))
    assert all(torch.isfinite(t).all() for t in final.values())
    assert all(torch.equal(final[name], last_good[name]) for name in final)    # no discarded update leaked in
