"""``koda launch --topology FILE -- <training args>``: validate, place, write the hostfile, run deepspeed.

Usage:
    koda launch --topology launchers/topologies/torus-4x4x2x2.yaml -- --config small --world-size 64
    koda launch --topology FILE --dry-run -- --config smoke      # print files and commands only
    koda launch --topology FILE --launcher no_ssh --node-rank auto -- --config small   # per node (SLURM)
    koda launch --topology launchers/topologies/loopback-2node.yaml -- --config smoke --steps 40

Everything after ``--`` goes to ``python -m koda.train`` on every rank. Nothing is written or
started unless the topology file is valid and agrees with the run's DeepSpeed plan (world size and
expert-parallel size, koda.topology.layout; the run config's ``world_size`` counts, so a preset
made for another world needs ``--world-size N`` after ``--``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from koda.topology.launch import TRAIN_MODULE, check_backend, format_plan, plan_launch, run_launch
from koda.topology.layout import check_layout, resolve_run_layout
from koda.topology.placement import naive_placement, place
from koda.topology.spec import LAUNCHERS, load_topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="koda launch", description="Launch a multi-node job from a 4-D torus topology file."
    )
    p.add_argument("--topology", required=True, help="topology YAML file (see docs/launching.md)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the hostfile and the exact commands; write and run nothing",
    )
    p.add_argument("--hostfile", help="where to write the DeepSpeed hostfile (default runs/launch/<topology>.hostfile)")
    p.add_argument("--launcher", choices=LAUNCHERS, help="override launch.launcher from the file")
    p.add_argument(
        "--node-rank", help="with launcher no_ssh: this node's line in the hostfile, or 'auto' (by hostname)"
    )
    p.add_argument("--master-port", type=int, help="override launch.master_port")
    p.add_argument("--no-placement", action="store_true", help="keep the file's host order (skip the placement search)")
    p.add_argument(
        "--probe",
        action="store_true",
        help="launch koda.topology.probe instead of the trainer: checks rendezvous and rank placement",
    )
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then arguments for python -m koda.train")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    topology = load_topology(args.topology)
    if not args.probe:  # the probe runs no trainer, so no plan to agree with
        check_layout(topology, resolve_run_layout(train_args))
    placement = naive_placement(topology) if args.no_placement else place(topology)
    hostfile = args.hostfile or Path("runs/launch") / f"{Path(args.topology).stem}.hostfile"
    plan = plan_launch(
        topology,
        placement,
        train_args,
        hostfile=hostfile,
        launcher=args.launcher,
        node_rank=args.node_rank,
        master_port=args.master_port,
        module="koda.topology.probe" if args.probe else TRAIN_MODULE,
    )
    print(format_plan(plan), flush=True)
    if args.dry_run:
        return 0
    check_backend(args.launcher or topology.launch.launcher)
    return run_launch(plan)
