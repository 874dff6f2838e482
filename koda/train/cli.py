"""``koda train``: validate and prepare in this process, then start the ranks.

Run by hand (``koda train --config smoke``), it checks the run config and the DeepSpeed
config against the model and world size, builds the tokenizer and shards if missing, and
then starts ``world_size`` local ranks through DeepSpeed's launcher, so a bad config fails
once, here, before any rank starts. Started by a launcher (``deepspeed ... --module
koda.train``, or ``koda launch``), i.e. with RANK/LOCAL_RANK set, it is one rank and trains.

SIGTERM, SIGUSR1 or Ctrl-C (SIGINT) to ``koda train`` makes every rank save at the next step
boundary and exit; the command then exits 0 and ``--resume`` continues
(``koda.distributed.preemption``). A second one stops everything at once (no checkpoint is
half-written: a save becomes a checkpoint only when its COMPLETE record is). If ``koda train``
itself dies, even by SIGKILL, the launcher and the ranks stop too (``koda.distributed.guardian``).

The stages: ``pretrain`` (``koda.pretrain.stage``) and ``rl`` (``koda.rl.stage``), each run by
``koda.run.loop.RunLoop``. A config field that only the other stage reads is refused.
"""

from __future__ import annotations

import argparse
import os

from koda.config import run as run_config
from koda.distributed.accelerator import configure_accelerator, supports_bf16


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda train", description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("pretrain", "rl"), default="pretrain",
                   help="pretrain: cross-entropy on the corpus; rl: the hybrid RL stage (the run config's rl "
                   "section; start it from a pre-trained model with --init-from)")
    p.add_argument("--config", default="smoke", help="preset name (smoke, small, large) or a YAML path")
    p.add_argument("--run-dir", help="override run_dir")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--world-size", type=int, help="override world_size (local ranks)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set moe.aux_loss_weight=0")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    p.add_argument("--resume-tag", help="continue from this checkpoint tag")
    p.add_argument("--resume-older", action="store_true",
                   help="with --resume: if the newest checkpoint is damaged, continue from the newest older complete "
                   "one (says which; the damaged one is kept as it is). Without it a damaged newest checkpoint is "
                   "refused")
    p.add_argument("--init-from", metavar="RUN_OR_CKPT",
                   help="start from these weights (converted directory, run or checkpoint of any world size) "
                   "with a fresh optimizer, schedule and step count")
    p.add_argument("--random-weights", action="store_true",
                   help="--stage rl only: start from random weights on purpose (otherwise --init-from is required)")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)   # added by DeepSpeed's launcher
    return p


def load_config(args) -> run_config.RunConfig:
    overrides = list(args.set)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.world_size is not None:
        overrides.append(f"world_size={args.world_size}")
    return run_config.load(args.config, overrides)


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_stage(checkpoints, tag: str | None, stage: str, older: bool = False) -> None:
    """The checkpoint to resume was written by this stage (its record says which)."""
    from koda.checkpoint import record
    from koda.errors import KodaError

    found = record.resolve_tag(checkpoints, tag, older=older)
    if found is None:
        return
    written = record.read(checkpoints, found).stage
    if written != stage:
        raise KodaError(f"checkpoint {checkpoints / found}: written by the {written} stage; resume it with "
                        f"--stage {written}" + (" (or start the RL stage from it with --init-from)"
                                                if written == "pretrain" else ""))


def validate(cfg: run_config.RunConfig, world_size: int, resuming: bool, stage: str = "pretrain",
             resume_tag: str | None = None, resume_older: bool = False):
    """Everything that can be checked before ranks start; returns the actor's resolved DeepSpeedPlan."""
    from koda.distributed import ds_config
    from koda.distributed.checkpoint import refuse_overwrite
    from koda.run_layout import RunLayout

    refuse_overwrite(RunLayout(cfg.run_dir).checkpoints, resuming)
    if resuming:        # first: "written by the rl stage" says more than the rl fields it would refuse
        check_stage(RunLayout(cfg.run_dir).checkpoints, resume_tag, stage, resume_older)
    run_config.refuse_unread(cfg, stage)
    if stage == "rl":
        from koda.rl.stage import check_config

        check_config(cfg, world_size)
    plan = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=world_size,
                             train_steps=cfg.train.steps, bf16_supported=supports_bf16())
    return plan if cfg.optimizer is None else ds_config.with_client_optimizer(plan, cfg.optimizer.lr)


def run_rank(args, cfg: run_config.RunConfig) -> None:
    """This process is one rank: join the group, run the chosen stage's loop, and end the process
    (``comm.leave``) once it is done."""
    from koda.distributed.rank_start import start_rank

    start_rank()                         # first: until then a forwarded stop signal would end this rank
    run_config.refuse_unread(cfg, args.stage)
    options = dict(resume=args.resume, resume_tag=args.resume_tag, init_from=args.init_from,
                   resume_older=args.resume_older)
    if args.stage == "rl":
        from koda.rl.stage import train

        train(cfg, random_weights=args.random_weights, **options)
    else:
        from koda.pretrain.stage import train

        train(cfg, **options)
    from koda.distributed import comm

    comm.leave()                         # after a clean end only: a failed rank must not wait for the others


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    cfg = load_config(args)
    configure_accelerator()
    if under_launcher():
        run_rank(args, cfg)
        return 0
    from koda.errors import KodaError

    resuming = bool(args.resume or args.resume_tag)
    if args.init_from and resuming:
        raise KodaError("--init-from starts a new run; it cannot be combined with --resume / --resume-tag")
    if args.resume_older and not args.resume:
        raise KodaError("--resume-older goes with --resume")
    if args.random_weights and args.stage != "rl":
        raise KodaError("--random-weights is for --stage rl (pre-training starts from random weights anyway)")
    if args.stage == "rl" and not resuming:
        from koda.rl.stage import check_source as check_rl_source

        check_rl_source(args.init_from, args.random_weights)
    validate(cfg, cfg.world_size, resuming=resuming, stage=args.stage, resume_tag=args.resume_tag,
             resume_older=args.resume_older)
    if args.init_from:
        from koda.run.init_from import check_source

        check_source(args.init_from, cfg.model)
    from koda.data.prepare import prepare

    prepare(cfg.data, cfg.model.vocab_size)
    from koda.distributed import local_launch

    port = local_launch.free_port()
    try:
        return local_launch.run(local_launch.command(cfg.world_size, port, "koda.train", argv))
    finally:
        from koda.distributed.comm import remove_shm_buffers

        remove_shm_buffers("127.0.0.1", port)
