"""The trainer's optimizer wiring that needs no ranks: latency scales from the run config's topology."""

import pytest

from koda.errors import ConfigError
from koda.optim.config import OptimizerConfig
from koda.optim.latency import latency_scales
from koda.pretrain.optimizer import ClientOptimizer, Scales, latency
from koda.topology import load_topology, naive_placement, place
from tests.helpers.ranks import REPO

TORUS = str(REPO / "launchers/topologies/torus-4x4x2x2.yaml")          # 64 ranks


def test_no_kappa_means_no_scaling():
    assert latency(OptimizerConfig(), rank=0, world=2) == Scales(1.0, 1.0)


def test_scales_come_from_the_topology_and_the_launch_placement():
    """Each rank's scales are those of its own groups under koda launch's placement (not the
    file order), below 1 with kappa > 0."""
    topology = load_topology(TORUS)
    cfg = OptimizerConfig(kappa=1e-3, topology=TORUS)
    got = [latency(cfg, rank=r, world=64) for r in (0, 63)]
    for rank, scales in zip((0, 63), got, strict=True):
        want = latency_scales(topology, place(topology), rank, 1e-3)
        assert (scales.dense, scales.expert) == (want.dense, want.expert)
        assert 0 < scales.dense < 1 and 0 < scales.expert < 1
        naive = latency_scales(topology, naive_placement(topology), rank, 1e-3)
        assert scales.expert != naive.expert       # the file order would give other groups


def test_topology_of_another_world_is_refused():
    cfg = OptimizerConfig(kappa=1e-3, topology=TORUS)
    with pytest.raises(ConfigError, match=r"optimizer.topology .* describes 64 ranks, this run has 2"):
        latency(cfg, rank=0, world=2)


def test_expert_groups_come_from_the_plans_ep_size(tmp_path):
    """A topology file saying EP 1 beside a plan with EP 8: the scales are those of EP-8 groups
    (and placement), the same as with a file that says 8."""
    from pathlib import Path

    import yaml

    doc = yaml.safe_load(Path(TORUS).read_text())
    doc["parallel"]["expert_parallel_size"] = 1
    ep1 = tmp_path / "ep1.yaml"
    ep1.write_text(yaml.safe_dump(doc))
    for rank in (0, 37):
        want = latency(OptimizerConfig(kappa=1e-3, topology=TORUS), rank=rank, world=64)
        got = latency(OptimizerConfig(kappa=1e-3, topology=str(ep1)), rank=rank, world=64, ep_size=8)
        assert got == want
        file_says = latency(OptimizerConfig(kappa=1e-3, topology=str(ep1)), rank=rank, world=64)
        assert file_says.expert != want.expert      # EP 1: one 64-rank expert-data group


@pytest.mark.parametrize("name, kfac, moves", [("muon", {}, True), ("kfac", {"update_rms": None}, False),
                                              ("adamw", {}, False), ("kfac", {}, True)])
def test_transforms_that_set_update_norms_take_the_clipping_from_deepspeed(name, kfac, moves):
    """DeepSpeed clips after the gradient transforms: Muon's orthogonalised updates and K-FAC's
    steps rescaled to one RMS have norms set by construction, so with those the plan's
    gradient_clipping moves into the transform; the other optimizers leave it."""
    from koda.distributed import ds_config
    from koda.pretrain.optimizer import ClientOptimizer
    from tests.helpers.tiny import TINY

    plan = ds_config.resolve(ds_config.load("zero3_ep_smoke.json"), model=TINY, world_size=2, train_steps=100,
                             bf16_supported=False)
    client = ClientOptimizer(OptimizerConfig.from_dict({"name": name, "kfac": kfac}), seed=0, scales=Scales())
    after = client.plan(plan)
    assert plan.config["gradient_clipping"] == 1.0                        # the given plan is not changed
    assert (after.config["gradient_clipping"], client.clip) == ((0.0, 1.0) if moves else (1.0, 0.0))


@pytest.mark.parametrize("nesterov", [True, False])
def test_the_run_configs_sgd_settings_reach_the_optimizer(nesterov):
    import torch

    cfg = OptimizerConfig(name="kfac", lr=0.1, momentum=0.8, nesterov=nesterov)
    built = ClientOptimizer(cfg, seed=0, scales=Scales(1.0, 1.0))([{"params": [torch.nn.Parameter(torch.ones(2))]}])
    assert (built.defaults["rule"], built.defaults["momentum"], built.defaults["nesterov"]) == ("sgd", 0.8, nesterov)
