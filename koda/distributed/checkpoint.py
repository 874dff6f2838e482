"""Crash-safe checkpoints: DeepSpeed's ZeRO-3/AutoEP state plus KODA's own per-rank state.

Layout of ``<run>/checkpoints``::

    latest                  the tag of the newest complete checkpoint (DeepSpeed's format)
    step00000200/           DeepSpeed's files, koda_rank<R>.pt per rank, then COMPLETE

Order of a save: every rank writes its DeepSpeed shards and its ``koda_rank<R>.pt``; after
a barrier rank 0 records every file's size in ``COMPLETE`` and only then repoints ``latest``
(write to a temporary file, fsync, rename). A crash at any moment leaves ``latest`` naming
the previous complete checkpoint, and a tag directory without a valid ``COMPLETE`` is never
loaded. Older complete checkpoints beyond ``keep`` are deleted only after the new one is
complete. DeepSpeed's ``latest`` convention is kept so its tools (``ds_to_universal``)
find the checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from koda.distributed import comm
from koda.errors import KodaError

COMPLETE = "COMPLETE"
LATEST = "latest"
# Layout of KODA's part of a checkpoint (client_state["koda"], koda_rank<R>.pt, COMPLETE).
# Bumped on an incompatible change, so tools refuse what they cannot read instead of
# misreading it. Checkpoints written before the field existed are format 1.
FORMAT = 1


def checkpoint_format(koda_state: dict) -> int:
    return int(koda_state.get("format", 1))


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(engine, directory: str | Path, step: int, client_state: dict, rank_state: dict, keep: int) -> str:
    """Collective: every rank calls it. Returns the tag written."""
    directory = Path(directory)
    tag = tag_for(step)
    target = directory / tag
    if comm.rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        if target.exists():          # a crashed save of this step, or a re-save after resume
            shutil.rmtree(target)
    comm.barrier()
    engine.save(str(directory), tag, client_state)
    state_path = target / f"koda_rank{comm.rank()}.pt"
    torch.save(rank_state, state_path.with_name(state_path.name + ".tmp"))
    os.replace(state_path.with_name(state_path.name + ".tmp"), state_path)
    comm.barrier()
    if comm.rank() == 0:
        files = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}
        record = {"step": step, "world_size": comm.world_size(), "files": files}
        _atomic_write_text(target / COMPLETE, json.dumps(record, indent=1))
        _atomic_write_text(directory / LATEST, tag)
        _prune(directory, keep)
    comm.barrier()
    return tag


def verify(directory: str | Path, tag: str) -> dict:
    """The COMPLETE record of `tag`, after checking every recorded file is present and whole."""
    target = Path(directory) / tag
    try:
        record = json.loads((target / COMPLETE).read_text())
    except FileNotFoundError:
        raise KodaError(f"checkpoint {target}: incomplete (no {COMPLETE} marker; the save was interrupted)") from None
    except ValueError:
        raise KodaError(f"checkpoint {target}: corrupt {COMPLETE} marker") from None
    for name, size in record["files"].items():
        path = target / name
        if not path.is_file():
            raise KodaError(f"checkpoint {target}: file {name} is missing")
        if path.stat().st_size != size:
            raise KodaError(f"checkpoint {target}: file {name} is {path.stat().st_size} bytes, "
                            f"{size} when saved (truncated or corrupt)")
    return record


def complete_tags(directory: str | Path) -> list[str]:
    """Tags with a COMPLETE marker, oldest first (tags sort by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.parent.name for p in directory.glob(f"*/{COMPLETE}"))


def refuse_overwrite(directory: str | Path, resuming: bool) -> None:
    """A fresh start must not write over another run's checkpoints (and its metrics)."""
    tags = complete_tags(directory)
    if tags and not resuming:
        raise KodaError(f"{Path(directory).parent} already holds checkpoints (latest {tags[-1]}): pass --resume "
                        "to continue that run, or another --run-dir")


def resolve_tag(directory: str | Path, tag: str | None = None) -> str | None:
    """`tag` if given (verified), else the tag in ``latest`` if it verifies, else the newest
    complete one; None when there is nothing to resume."""
    directory = Path(directory)
    if tag is not None:
        verify(directory, tag)
        return tag
    candidates = complete_tags(directory)[::-1]
    latest = directory / LATEST
    if latest.is_file():
        candidates.insert(0, latest.read_text().strip())
    for candidate in candidates:
        try:
            verify(directory, candidate)
            return candidate
        except KodaError:
            continue
    return None


def load(engine, directory: str | Path, tag: str, load_optimizer: bool = True,
         universal: bool = False) -> tuple[dict, dict | None]:
    """Collective. Returns (client_state, this rank's KODA state or None when the checkpoint
    was written by a smaller world and has no file for this rank).

    universal: load through DeepSpeed's universal format (another world or expert-parallel
    size; see ``koda.distributed.universal``); the engine must have been built with it.
    """
    verify(directory, tag)
    if universal:
        from koda.distributed import universal as universal_format

        ds_dir, ds_tag = universal_format.prepare(directory, tag)
        with universal_format.repaired_load(engine.ds):
            client_state = engine.load(str(ds_dir), ds_tag, load_optimizer=load_optimizer)
    else:
        client_state = engine.load(str(directory), tag, load_optimizer=load_optimizer)
    path = Path(directory) / tag / f"koda_rank{comm.rank()}.pt"
    rank_state = torch.load(path, weights_only=False) if path.is_file() else None
    return client_state, rank_state


def _prune(directory: Path, keep: int) -> None:
    tags = complete_tags(directory)
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(directory / old, ignore_errors=True)
