"""Which checkpoint a resume picks, given interrupted and damaged saves (no ranks needed)."""

import json

import pytest

from koda.distributed import checkpoint
from koda.errors import KodaError


def _fake(root, step, complete=True, corrupt=False):
    tag = checkpoint.tag_for(step)
    (root / tag).mkdir(parents=True)
    (root / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x" * 100)
    if complete:
        files = {"zero_pp_rank_0_mp_rank_00_model_states.pt": 100}
        (root / tag / checkpoint.COMPLETE).write_text(json.dumps({"step": step, "world_size": 1, "files": files}))
    if corrupt:
        (root / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x" * 60)
    return tag


def test_latest_is_used_when_valid(tmp_path):
    _fake(tmp_path, 100)
    _fake(tmp_path, 200)
    (tmp_path / "latest").write_text(checkpoint.tag_for(100))
    assert checkpoint.resolve_tag(tmp_path) == "step00000100"


def test_interrupted_save_is_skipped(tmp_path):
    _fake(tmp_path, 100)
    _fake(tmp_path, 200, complete=False)         # crashed before COMPLETE: latest never moved
    (tmp_path / "latest").write_text(checkpoint.tag_for(100))
    assert checkpoint.resolve_tag(tmp_path) == "step00000100"
    with pytest.raises(KodaError, match="incomplete"):
        checkpoint.verify(tmp_path, "step00000200")


def test_truncated_file_falls_back_to_the_previous_checkpoint(tmp_path):
    _fake(tmp_path, 100)
    _fake(tmp_path, 200, corrupt=True)
    (tmp_path / "latest").write_text(checkpoint.tag_for(200))
    assert checkpoint.resolve_tag(tmp_path) == "step00000100"
    with pytest.raises(KodaError, match=r"60 bytes, 100 when saved"):
        checkpoint.resolve_tag(tmp_path, "step00000200")


def test_nothing_to_resume(tmp_path):
    assert checkpoint.resolve_tag(tmp_path / "missing") is None
    _fake(tmp_path, 5, complete=False)
    assert checkpoint.resolve_tag(tmp_path) is None
