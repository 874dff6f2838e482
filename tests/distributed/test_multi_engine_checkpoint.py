"""Several engines in one checkpoint, on two real ranks: layout, round trip, digests."""

import json

import pytest

from tests.helpers.ranks import run_ranks
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow


def test_actor_critic_and_tracker_save_and_load_together(tiny_data, tmp_path):
    config = write_run_config(tmp_path / "run.yaml", tiny_data, tmp_path / "run", steps=10)
    results = run_ranks("tests.helpers.checkpoint_jobs:save_and_load_two_engines",
                        {"config_path": str(config), "out_dir": str(tmp_path / "out")}, tmp_path / "ranks")
    tag_dir = tmp_path / "out" / "checkpoints" / "step00000001"
    record = json.loads((tag_dir / "COMPLETE").read_text())
    assert record["format"] == 2 and record["engines"] == ["actor", "critic"] and record["extra"] == ["reward_tracker"]
    for engine in ("actor", "critic"):
        for rank in (0, 1):
            for kind in ("model", "optim"):
                name = f"{engine}/zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt"
                assert len(record["files"][name]["sha256"]) == 64, name
    assert {"koda_rank0.pt", "koda_rank1.pt", "reward_tracker/state.pt"} <= set(record["files"])
    assert (tmp_path / "out" / "checkpoints" / "latest").read_text() == "step00000001"
    for rank, result in enumerate(results):
        assert result["moved"] == {"actor": True, "critic": True}        # the second step changed both
        assert result["restored"] == {"actor": True, "critic": True}     # the load brought both back exactly
        assert result["client"] == {"step": 1} and result["rank_state"] == {"rank": rank}
        assert result["tracker"] == {"mean": 1.5, "count": 7}
        # rank 1 hashes this file during the load; both ranks raise the same one-line error
        assert result["error"] == (f"checkpoint {tag_dir}: file critic/zero_pp_rank_1_mp_rank_00_optim_states.pt "
                                   "differs from the one saved (sha256 digest mismatch: corrupt)")
