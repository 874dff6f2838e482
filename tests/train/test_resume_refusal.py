"""`koda train --resume` never guesses past a damaged newest checkpoint (front process, no ranks)."""

import pytest

from koda.config import run as run_config
from koda.errors import KodaError
from koda.train.cli import main, validate
from tests.distributed.test_checkpoint_files import _fake


def test_resume_refuses_a_damaged_newest_checkpoint_and_resume_older_accepts_the_older(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    _fake(ckpt, 10)
    _fake(ckpt, 20, corrupt=True)
    (ckpt / "latest").write_text("step00000020")
    args = ["--config", "smoke", "--run-dir", str(tmp_path / "run")]
    with pytest.raises(KodaError, match=r"step00000020: file .* is 60 bytes, 100 when saved .* --resume-older"):
        main([*args, "--resume"])
    with pytest.raises(KodaError, match="--resume-older goes with --resume"):
        main([*args, "--resume-older"])
    cfg = run_config.load("smoke", [f"run_dir={tmp_path / 'run'}"])
    validate(cfg, 2, resuming=True, resume_older=True)        # the older complete checkpoint will do
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step00000010", "step00000020"]
