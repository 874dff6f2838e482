"""Which checkpoint a resume picks, given interrupted and damaged saves (no ranks needed)."""

import json
from pathlib import Path

import pytest
import torch

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


def test_a_damaged_latest_checkpoint_is_refused_and_left_as_it_is(tmp_path):
    _fake(tmp_path, 100)
    _fake(tmp_path, 200, corrupt=True)
    (tmp_path / "latest").write_text(checkpoint.tag_for(200))
    before = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    with pytest.raises(KodaError, match=r"step00000200: file zero_pp_rank_0_mp_rank_00_model_states.pt is 60 bytes, "
                                        r"100 when saved .*--resume-older") as err:
        checkpoint.resolve_tag(tmp_path)
    assert "\n" not in str(err.value)
    assert sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*")) == before


def test_resume_older_takes_the_newest_complete_one_and_says_which(tmp_path):
    _fake(tmp_path, 100)
    _fake(tmp_path, 150)
    _fake(tmp_path, 200, corrupt=True)
    (tmp_path / "latest").write_text(checkpoint.tag_for(200))
    said = []
    assert checkpoint.resolve_tag(tmp_path, older=True, log=said.append) == "step00000150"
    assert said == ["checkpoint step00000200 damaged (left as it is): resuming from the older step00000150"]
    with pytest.raises(KodaError, match=r"60 bytes, 100 when saved"):
        checkpoint.resolve_tag(tmp_path, "step00000200")


def test_a_missing_file_or_a_latest_without_its_directory_is_refused(tmp_path):
    _fake(tmp_path, 100)
    tag = _fake(tmp_path, 200)
    (tmp_path / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt").unlink()
    with pytest.raises(KodaError, match=r"step00000200: file zero_pp_rank_0_mp_rank_00_model_states.pt is missing"):
        checkpoint.resolve_tag(tmp_path)
    (tmp_path / "latest").write_text(checkpoint.tag_for(300))
    with pytest.raises(KodaError, match=r"step00000300: incomplete"):
        checkpoint.resolve_tag(tmp_path)


def test_nothing_to_resume(tmp_path):
    assert checkpoint.resolve_tag(tmp_path / "missing") is None
    _fake(tmp_path, 5, complete=False)
    assert checkpoint.resolve_tag(tmp_path) is None


def _fake_v2(root, step, payload=b"weights" * 20):
    """A format-2 tag as ``checkpoint.save`` records it: actor files under actor/, digests."""
    tag = checkpoint.tag_for(step)
    files = {"actor/zero_pp_rank_0_mp_rank_00_model_states.pt": payload, "koda_rank0.pt": b"rng" * 5}
    for name, data in files.items():
        (root / tag / name).parent.mkdir(parents=True, exist_ok=True)
        (root / tag / name).write_bytes(data)
    entries = {name: {"size": len(data), "sha256": checkpoint.file_digest(root / tag / name)}
               for name, data in files.items()}
    record = {"format": 2, "step": step, "world_size": 1, "engines": ["actor"], "extra": [], "files": entries}
    (root / tag / checkpoint.COMPLETE).write_text(json.dumps(record))
    return tag


def test_a_same_size_corruption_is_named_by_its_digest(tmp_path):
    tag = _fake_v2(tmp_path, 100)
    checkpoint.verify(tmp_path, tag)
    path = tmp_path / tag / "actor" / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01                                   # one bit, same size
    path.write_bytes(bytes(data))
    with pytest.raises(KodaError) as err:
        checkpoint.verify(tmp_path, tag)
    assert str(err.value) == (f"checkpoint {tmp_path / tag}: file actor/zero_pp_rank_0_mp_rank_00_model_states.pt "
                              "differs from the one saved (sha256 digest mismatch: corrupt)")
    with pytest.raises(KodaError, match="differs from the one saved"):
        checkpoint.verify_collective(tmp_path, tag)     # what a load runs (one process: all files here)
    assert checkpoint.verify(tmp_path, tag, content=False)["step"] == 100    # sizes alone cannot see it


def test_engine_directories_in_both_layouts(tmp_path):
    v1 = _fake(tmp_path, 100)
    v2 = _fake_v2(tmp_path, 200)
    assert checkpoint.engine_dir(tmp_path, v1) == (tmp_path, v1)
    assert checkpoint.engine_dir(tmp_path, v2) == (tmp_path / v2, "actor")
    with pytest.raises(KodaError, match="format 1 holds only the actor, no critic"):
        checkpoint.engine_dir(tmp_path, v1, "critic")
    with pytest.raises(KodaError, match=r"no engine 'critic' \(it holds actor\)"):
        checkpoint.engine_dir(tmp_path, v2, "critic")


def test_a_future_layout_is_refused_in_one_line(tmp_path):
    tag = _fake_v2(tmp_path, 100)
    record = json.loads((tmp_path / tag / checkpoint.COMPLETE).read_text())
    (tmp_path / tag / checkpoint.COMPLETE).write_text(json.dumps({**record, "format": 3}))
    with pytest.raises(KodaError, match="layout format 3; this KODA reads formats 1 and 2"):
        checkpoint.verify(tmp_path, tag)


def test_pruning_keeps_the_newest_of_either_layout(tmp_path):
    _fake(tmp_path, 100)
    _fake_v2(tmp_path, 200)
    _fake_v2(tmp_path, 300)
    checkpoint._prune(tmp_path, keep=2)
    assert checkpoint.complete_tags(tmp_path) == ["step00000200", "step00000300"]
    assert not (tmp_path / "step00000100").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_stream_is_saved_and_restored():
    torch.cuda.init()
    torch.cuda.manual_seed(1)
    state = checkpoint.rng_state()
    assert "cuda" in state
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed(2)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), expected)


def test_a_damaged_checkpoint_moved_aside_is_neither_resumed_nor_pruned(tmp_path):
    _fake(tmp_path, 100)
    kept = tmp_path / "step00000200.replaced-1700000000"
    (tmp_path / _fake(tmp_path, 200, corrupt=True)).rename(kept)
    assert checkpoint.complete_tags(tmp_path) == ["step00000100"]
    assert checkpoint.resolve_tag(tmp_path) == "step00000100"
    _fake(tmp_path, 300)
    checkpoint._prune(tmp_path, keep=1)
    assert checkpoint.complete_tags(tmp_path) == ["step00000300"] and kept.is_dir()


class _FileEngine:
    """Stands in for ``koda.distributed.engine.Engine``: its state is one tensor in one file,
    written and read where DeepSpeed would put the engine's files (``<dir>/<tag>/``)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.loads = 0

    def save(self, directory: str, tag: str, client_state: dict) -> None:
        (Path(directory) / tag).mkdir(parents=True, exist_ok=True)
        torch.save({"weight": self.weight, "client": client_state}, Path(directory) / tag / "model_states.pt")

    def load(self, directory: str, tag: str, load_optimizer: bool = True) -> dict:
        self.loads += 1
        state = torch.load(Path(directory) / tag / "model_states.pt", weights_only=False)
        self.weight = state["weight"]
        return state["client"]


def test_load_refuses_a_file_changed_after_the_save_before_the_engine_reads_it(tmp_path):
    """Save and load in one process (no process group): a one-byte change of an engine's file,
    same size, is named by ``load`` itself, and the engine never unpickles the file."""
    engine = _FileEngine(torch.arange(64, dtype=torch.float32))
    saved = checkpoint.save({"actor": engine}, tmp_path, 7, {"koda": {"step": 7}}, {"rank": 0}, keep=2,
                            extra_state={"reward_tracker": {"count": 3}})
    loaded = checkpoint.load({"actor": engine}, tmp_path, saved.tag)
    assert (loaded.client_state, loaded.rank_state, loaded.extra_state) == \
        ({"koda": {"step": 7}}, {"rank": 0}, {"reward_tracker": {"count": 3}})
    assert engine.loads == 1

    victim = tmp_path / saved.tag / "actor" / "model_states.pt"
    data = bytearray(victim.read_bytes())
    data[data.index(engine.weight.numpy().tobytes()) + 5] ^= 0x01   # in the weight: still unpickles
    victim.write_bytes(bytes(data))
    assert torch.load(victim, weights_only=False)["weight"].shape == (64,)
    with pytest.raises(KodaError, match=r"file actor/model_states\.pt differs from the one saved \(sha256"):
        checkpoint.load({"actor": engine}, tmp_path, saved.tag)
    assert engine.loads == 1
