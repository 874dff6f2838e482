"""The parallel layout has one source of truth: the DeepSpeed plan of the run; the topology must agree.

The expert-parallel size is written twice, as ``parallel.expert_parallel_size`` in the topology
file (which chooses the placement, koda.topology.placement) and as ``expert_parallel.autoep_size``
in the run's DeepSpeed config (which forms the groups the ranks actually use, resolved by
koda.distributed.ds_config with ``auto`` = gcd(world, n_experts)). Likewise the world: the topology
has ``hosts x slots_per_host`` ranks, the run config declares ``world_size`` (its batch size and
learning-rate schedule were chosen for it). ``koda launch`` resolves the plan the way ``koda train``
does and refuses, before anything is written, a topology that disagrees with it; a silently
different EP size would place ranks for groups DeepSpeed never forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from koda.errors import KodaError
from koda.topology.spec import Topology


class LayoutError(KodaError):
    """A topology file and a run's DeepSpeed plan describe different layouts (one line)."""


@dataclass(frozen=True)
class RunLayout:
    """The layout of the run ``koda launch`` starts, with the files each value comes from."""

    world: int            # the run config's world_size (after --world-size / --set overrides)
    ep_size: int          # expert-parallel size the DeepSpeed plan resolves to for that world
    run_config: str       # the run config file
    ds_config: str        # the DeepSpeed config file


def run_config_file(name_or_path: str) -> Path:
    """The YAML file ``koda.config.run.load`` reads for a preset name or path."""
    from koda.config.run import PRESET_DIR

    path = Path(name_or_path)
    return path if path.is_file() else PRESET_DIR / f"{name_or_path}.yaml"


def resolve_run_layout(train_args: list[str]) -> RunLayout:
    """Resolve the DeepSpeed plan of ``python -m koda.train <train_args>`` exactly as ``koda train``
    validates it (``koda.train.cli.validate``), at the world size the run config declares."""
    from koda.distributed import ds_config
    from koda.distributed.accelerator import supports_bf16
    from koda.train import cli as train_cli

    args = train_cli.parser().parse_args(train_args)
    cfg = train_cli.load_config(args)
    plan = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=cfg.world_size,
                             train_steps=cfg.train.steps, bf16_supported=supports_bf16())
    return RunLayout(world=plan.world, ep_size=plan.ep_size, run_config=str(run_config_file(args.config)),
                     ds_config=str(ds_config.resolve_path(cfg.ds_config)))


def check_layout(topology: Topology, run: RunLayout) -> None:
    """Refuse a topology whose world size or expert-parallel size is not the run's (world first:
    the plan's EP size was resolved for the run's world)."""
    hosts, slots = len(topology.hosts), topology.slots_per_host
    if topology.world_size != run.world:
        raise LayoutError(
            f"world size {topology.world_size} of {topology.path} ({hosts} hosts x {slots} slots) != world_size "
            f"{run.world} of {run.run_config}, which {run.ds_config} is resolved for "
            f"(pass --world-size {topology.world_size} after --, or fix the topology)"
        )
    if topology.parallel.expert_parallel_size != run.ep_size:
        raise LayoutError(
            f"parallel.expert_parallel_size {topology.parallel.expert_parallel_size} in {topology.path} != "
            f"expert-parallel size {run.ep_size} that {run.ds_config} resolves to on {run.world} ranks "
            f"(set parallel.expert_parallel_size: {run.ep_size}, or expert_parallel.autoep_size in the ds_config)"
        )
