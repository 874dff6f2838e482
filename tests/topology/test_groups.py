"""Our model of DeepSpeed's groups equals what deepspeed.utils.groups actually builds."""

import itertools

import numpy as np
import pytest
from deepspeed.utils import groups as ds_groups

from koda.topology.groups import deepspeed_groups


def _deepspeed_builds(monkeypatch, world, ep, data_before_expert):
    """Run DeepSpeed's own group construction with a fake torch.distributed, per rank."""
    built = {"ep": set(), "edp": set()}
    for rank in range(world):
        monkeypatch.setattr(ds_groups, "_EXPERT_PARALLEL_GROUP", {})
        monkeypatch.setattr(ds_groups, "_EXPERT_PARALLEL_GROUP_RANKS", {})
        monkeypatch.setattr(ds_groups, "_EXPERT_DATA_PARALLEL_GROUP", {})
        monkeypatch.setattr(ds_groups, "_EXPERT_DATA_PARALLEL_GROUP_RANKS", {})
        monkeypatch.setattr(ds_groups.dist, "is_initialized", lambda: True)
        monkeypatch.setattr(ds_groups.dist, "get_world_size", lambda group=None: world)
        monkeypatch.setattr(ds_groups.dist, "get_rank", lambda group=None, r=rank: r)
        monkeypatch.setattr(ds_groups.dist, "new_group", lambda ranks, **k: tuple(ranks))
        monkeypatch.setattr(ds_groups, "log_dist", lambda *a, **k: None)
        ds_groups._create_expert_and_data_parallel(
            ep, mp_size=1, pp_size=1, use_data_before_expert_parallel_=data_before_expert
        )
        name = f"ep_size_{ep}"
        built["ep"].add(tuple(ds_groups._EXPERT_PARALLEL_GROUP_RANKS[name]))
        built["edp"].add(tuple(ds_groups._EXPERT_DATA_PARALLEL_GROUP_RANKS[name]))
    return built


CASES = [c for c in itertools.product((2, 8, 12, 64), (1, 2, 4, 8), (False, True)) if c[0] % c[1] == 0]


@pytest.mark.parametrize("world,ep,swap", CASES)
def test_groups_match_deepspeed(monkeypatch, world, ep, swap):
    ours = deepspeed_groups(world, ep, swap)
    theirs = _deepspeed_builds(monkeypatch, world, ep, swap)
    assert {tuple(g) for g in ours.ep.tolist()} == theirs["ep"]
    assert {tuple(g) for g in ours.edp.tolist()} == theirs["edp"]


def test_of_rank_and_refusal():
    g = deepspeed_groups(16, 4)
    ep, edp, dp = g.of_rank(6)
    assert ep.tolist() == [4, 5, 6, 7] and edp.tolist() == [2, 6, 10, 14] and dp.tolist() == list(range(16))
    with pytest.raises(ValueError, match="does not divide"):
        deepspeed_groups(10, 4)
    np.testing.assert_array_equal(deepspeed_groups(8, 2, True).ep, [[0, 4], [1, 5], [2, 6], [3, 7]])
