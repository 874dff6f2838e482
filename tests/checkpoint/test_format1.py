"""A checkpoint in the layout before several engines (format 1) still resumes and converts."""

import json

import pytest
import torch
from safetensors.torch import load_file

from koda.checkpoint import convert_checkpoint
from tests.helpers.ranks import launch, run_ranks

pytestmark = pytest.mark.slow
TAG = "step00000002"


def test_format1_checkpoint_converts_and_resumes_as_the_same_state(trained_run, tmp_path):
    """The reference writer of the old layout trains the base run's first 2 steps; its
    checkpoint must convert to the same tensors as the base run's format-2 step 2, and a
    resume from it must reproduce the base run's later losses bit for bit."""
    run = tmp_path / "v1"
    run_ranks("tests.helpers.checkpoint_jobs:train_then_save_format1",
              {"config_path": str(trained_run.config), "run_dir": str(run), "steps": 2}, tmp_path / "ranks")
    tag_dir = run / "checkpoints" / TAG
    assert (tag_dir / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file() and not (tag_dir / "actor").exists()

    convert_checkpoint(run, tmp_path / "old", tag=TAG)
    convert_checkpoint(trained_run.run_dir, tmp_path / "new", tag=TAG)
    old, new = load_file(tmp_path / "old" / "model.safetensors"), load_file(tmp_path / "new" / "model.safetensors")
    assert set(old) == set(new) and all(torch.equal(old[k], new[k]) for k in new)

    proc = launch(["koda.train", "--config", str(trained_run.config), "--run-dir", str(run), "--resume"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed at step 2" in proc.stdout
    base = trained_run.metrics()
    resumed = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert sorted(resumed) == [3, 4, 5, 6]
    for step in (3, 4, 5, 6):
        assert resumed[step]["train/ce"] == base[step]["train/ce"], step
    assert (run / "checkpoints" / "step00000006" / "actor").is_dir()       # later saves use format 2
