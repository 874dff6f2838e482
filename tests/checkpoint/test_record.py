"""The checkpoint record: what ``save`` writes is what every reader sees, through one module."""

import json

import pytest
import torch

from koda.checkpoint import record
from koda.distributed import checkpoint
from koda.errors import KodaError
from tests.distributed.test_checkpoint_files import _FileEngine


def _save(root, step, meta=None, extra=None):
    engine = _FileEngine(torch.arange(8, dtype=torch.float32))
    return checkpoint.save({"actor": engine}, root, step, {"koda": {"step": step}}, {"rank": 0}, keep=5,
                           extra_state=extra, meta=meta).tag


def test_the_record_holds_stage_layout_optimizer_and_source(tmp_path):
    tag = _save(tmp_path, 3, meta={"stage": "pretrain", "ep_size": 2, "optimizer": "koda:kfac",
                                   "source": "runs/smoke"})
    rec = record.read(tmp_path, tag, content=True)
    assert (rec.tag, rec.format, rec.step, rec.world_size, rec.engines, rec.extra) == (
        tag, checkpoint.FORMAT, 3, 1, ("actor",), ())
    assert (rec.stage, rec.ep_size, rec.optimizer, rec.source) == ("pretrain", 2, "koda:kfac", "runs/smoke")


def test_an_older_record_tells_its_stage_by_the_rl_part(tmp_path):
    tag = _save(tmp_path, 4, extra={"rl": {"step": 4}})
    rec = record.read(tmp_path, tag)
    assert (rec.stage, rec.ep_size, rec.optimizer, rec.source) == ("rl", None, None, None)
    marker = json.loads((tmp_path / tag / checkpoint.COMPLETE).read_text())
    assert "stage" not in marker


def test_one_locator_for_runs_checkpoint_dirs_and_tags(tmp_path):
    run = tmp_path / "run"
    tag = _save(run / "checkpoints", 5)
    for given, expected in ((run, (run / "checkpoints", None)), (run / "checkpoints", (run / "checkpoints", None)),
                            (run / "checkpoints" / tag, (run / "checkpoints", tag))):
        assert record.locate(given) == expected
        assert record.is_training_checkpoint(given) and record.run_dir_of(given) == run
    with pytest.raises(KodaError, match="not found"):
        record.locate(tmp_path / "missing")


def test_resuming_with_the_other_stage_is_refused_by_the_record(tmp_path):
    from koda.train.cli import check_stage

    ckpt = tmp_path / "checkpoints"
    _save(ckpt, 6, meta={"stage": "rl"})
    with pytest.raises(KodaError, match=r"written by the rl stage; resume it with --stage rl"):
        check_stage(ckpt, None, "pretrain")
    check_stage(ckpt, None, "rl")
