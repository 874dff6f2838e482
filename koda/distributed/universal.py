"""Resume on another world size through DeepSpeed's universal checkpoint.

A ZeRO-3 checkpoint stores each parameter and its Adam moments as flat partitions, one per
rank of the world that wrote it, and AutoEP's experts as per-EP-rank blocks; DeepSpeed can
load it only into the same layout. Its universal format stores every parameter whole
(``zero/<name>/fp32.pt``, ``exp_avg.pt``, ``exp_avg_sq.pt``; experts with all E experts),
and an engine started with ``"checkpoint": {"load_universal": true}`` re-partitions it for
whatever world and expert-parallel size it runs with. So a resume whose world size (or
expert-parallel size) differs from the checkpoint's:

1. rank 0 runs ``deepspeed.checkpoint.ds_to_universal`` in-process on each engine's
   directory of the verified tag, into ``<tag>/<engine>/universal/`` (a temporary sibling
   renamed when done, so a crash never leaves a half-converted directory that a later
   resume would trust; a finished one is reused), while the other ranks wait;
2. every rank builds its engine with ``load_universal`` and loads from there, then
   ``repaired_load`` undoes two side effects of DeepSpeed 0.19.8's ZeRO-3 universal
   loader (``stage3.load_hp_checkpoint_state_from_checkpoint_dir_stage3``) that a plain
   load does not have: it hands *one* ``step`` tensor to the optimizer state of every
   sub-group, and torch's Adam advances ``step`` in place once per sub-group, so with
   the dense and the expert sub-groups the shared count moves twice per optimizer step and
   Adam's bias correction is wrong from the first step after the resume (the 2 -> 1 test
   sees the loss drift by ~7e-4 one step later without the repair, < 1e-9 with it); and it
   copies the first param group's fields, its ``name`` included, onto every group.

The universal directory sits inside the tag directory so pruning old checkpoints removes
it too (format 1, the actor's files directly in the tag: ``<tag>/universal/``). KODA's own
state travels in DeepSpeed's client state (step, data position, model record) and
``koda_rank<R>.pt`` (RNG), both read from the original tag. Multi-node runs
need the checkpoint directory on a filesystem every node sees, as any resume does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import time
from pathlib import Path

import torch

from koda.checkpoint import record
from koda.distributed import comm
from koda.distributed.ds_config import DeepSpeedPlan, expert_parallel_size
from koda.errors import KodaError

UNIVERSAL = "universal"


def saved_layout(directory: str | Path, tag: str, engine: str = record.ACTOR) -> tuple[int, int]:
    """(world size, expert-parallel size) `engine` was written with."""
    saved = record.verify(directory, tag, content=False)
    ds_dir, ds_tag = record.engine_dir(directory, tag, engine, saved)
    model_states = ds_dir / ds_tag / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    try:
        state = torch.load(model_states, map_location="cpu", weights_only=False)
    except Exception as err:   # any unpickling failure means the same: this file is unusable
        raise KodaError(f"checkpoint {Path(directory) / tag}: cannot read {model_states.name} "
                        f"({type(err).__name__})") from None
    return int(saved["world_size"]), expert_parallel_size(state.get("ds_config") or {})


def needed(directory: str | Path, tag: str, plan: DeepSpeedPlan) -> str | None:
    """Why this resume must go through the universal format, or None when a plain load works."""
    saved_world, saved_ep = saved_layout(directory, tag)
    if saved_world != plan.world:
        return f"world size {saved_world} -> {plan.world}"
    if saved_ep != plan.ep_size:
        return f"expert-parallel size {saved_ep} -> {plan.ep_size}"
    return None


def enable(plan: DeepSpeedPlan) -> DeepSpeedPlan:
    """`plan` with DeepSpeed's universal loading switched on (it only changes loading)."""
    return plan.with_config(checkpoint={**plan.config.get("checkpoint", {}), "load_universal": True})


@contextlib.contextmanager
def repaired_load(ds_engine):
    """Wrap a universal ``load_checkpoint``: afterwards every optimizer sub-group owns its
    ``step`` counter and every param group has its own name back (see the module notes)."""
    zero = ds_engine.optimizer
    names = [group.get("name") for group in zero.optimizer.param_groups]
    yield
    for group, name in zip(zero.optimizer.param_groups, names, strict=True):
        if name is not None:
            group["name"] = name
    for flat in getattr(zero, "fp32_partitioned_groups_flat", []):
        state = zero.optimizer.state.get(flat, {})
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _convert(source: Path, root: Path) -> None:
    """ds_to_universal, sequential (no worker pool: forking a rank that holds a process
    group is unsafe), its progress output kept off the console unless it fails."""
    from deepspeed.checkpoint import ds_to_universal

    tmp = root.with_name(f"{UNIVERSAL}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(input_folder=str(source), output_folder=str(tmp / source.name),
                              num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                              strict=True, inject_missing_state=False)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            ds_to_universal.main(args)     # also writes tmp/latest_universal
    except (Exception, SystemExit) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        last = " ".join(str(err).split())[:200] or type(err).__name__
        raise KodaError(f"checkpoint {source}: DeepSpeed's universal conversion failed: {last}") from None
    os.rename(tmp, root)


def prepare(source: str | Path, log=print) -> tuple[Path, str]:
    """Collective. `source`: one engine's DeepSpeed directory (``checkpoint.engine_dir``).
    Returns (load_dir, tag) of its universal copy, converting it on rank 0 first unless a
    finished copy exists. Every rank raises if the conversion failed."""
    source = Path(source)
    root = source / UNIVERSAL
    error = None
    if comm.rank() == 0 and not (root / source.name / "zero").is_dir():
        for stale in source.glob(f"{UNIVERSAL}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        try:
            _convert(source, root)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            log(f"converted {source} to DeepSpeed's universal format ({size / 1e6:,.1f} MB, "
                f"{time.perf_counter() - start:.1f} s)")
        except KodaError as err:
            error = str(err)
    error = comm.broadcast_object(error)
    if error:
        raise KodaError(error)
    return root, source.name

