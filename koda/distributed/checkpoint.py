"""Crash-safe checkpoints of several DeepSpeed engines plus KODA's own state.

Layout of ``<run>/checkpoints`` (format 2)::

    latest                  the tag of the newest complete checkpoint (DeepSpeed's format)
    step00000200/
      actor/                DeepSpeed's files of the engine named "actor" (critic/, encoder/, ...)
      reward_tracker/state.pt   replicated non-engine state, written by rank 0 (``extra_state``)
      koda_rank<R>.pt       per rank: RNG state (CPU, numpy, Python; CUDA where present)
      COMPLETE              written last: format, step, world size, engines, every file's
                            size and sha256 digest

Each engine's directory is what DeepSpeed's ``save_checkpoint(<tag dir>, tag=<engine>)``
writes, so DeepSpeed's own tools (``ds_to_universal``) take ``<tag>/<engine>`` as their
input unchanged.

Order of a save: every rank writes every engine's shards and its ``koda_rank<R>.pt``; after
a barrier the files are hashed, split over the ranks (each reads back about 1/world of the
bytes, in parallel), rank 0 writes ``COMPLETE`` and only then repoints ``latest`` (write to
a temporary file, fsync, rename). A crash at any moment leaves ``latest`` naming the
previous complete checkpoint, and a tag directory without a valid ``COMPLETE`` is never
loaded. A load checks every file's digest (again split over the ranks), so a corrupted file
of the right size is named before DeepSpeed unpickles it. Older complete checkpoints
beyond ``keep`` are deleted only after the new one is complete.

Format 1 (before several engines): DeepSpeed's files of the one engine, the actor, directly
in the tag directory, and ``COMPLETE`` with sizes only. It still loads (as the actor),
converts and prunes; only its content cannot be checked beyond the sizes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from koda.checkpoint.record import (  # noqa: F401 - the record's names, re-exported for the writers' callers
    ACTOR,
    COMPLETE,
    DIGEST,
    FORMAT,
    LATEST,
    READABLE_FORMATS,
    check_file,
    checkpoint_format,
    complete_tags,
    engine_dir,
    file_digest,
    latest_tag,
    read_record,
    record_format,
    resolve_tag,
    tag_for,
    verify,
)
from koda.distributed import comm
from koda.errors import KodaError

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED = {"universal"}


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
    """This rank's RNG streams; the CUDA one is the current device's (one device per rank)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _check_names(engines: dict, extra: dict) -> None:
    for name in [*engines, *extra]:
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise KodaError(f"checkpoint part name {name!r}: use lower-case letters, digits and _ "
                            f"(and not {', '.join(sorted(_RESERVED))})")
    both = set(engines) & set(extra)
    if both:
        raise KodaError(f"checkpoint part {sorted(both)[0]!r} is both an engine and extra state")
    if not engines:
        raise KodaError("a checkpoint needs at least one engine")


@dataclass(frozen=True)
class Saved:
    tag: str
    bytes: int
    seconds: float          # the whole save, barriers included
    hash_seconds: float     # of which hashing (the slowest rank)


def save(engines: dict, directory: str | Path, step: int, client_state: dict, rank_state: dict, keep: int,
         extra_state: dict[str, object] | None = None, meta: dict | None = None) -> Saved:
    """Collective: every rank calls it with the same engines (name -> Engine, e.g. actor,
    critic, encoder) and the same extra state (name -> picklable, the same on every rank).
    `client_state` goes with every engine (DeepSpeed stores it per engine); `rank_state` is
    this rank's own. `meta` (stage, ep_size, optimizer, source) goes into the COMPLETE record
    (``koda.checkpoint.record.CheckpointRecord``)."""
    start = time.perf_counter()
    extra_state = extra_state or {}
    _check_names(engines, extra_state)
    directory = Path(directory)
    tag = tag_for(step)
    target = directory / tag
    if comm.rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        if (target / COMPLETE).exists():    # a re-save after resuming from an older checkpoint: keep it
            kept = target.with_name(f"{tag}.replaced-{int(time.time())}")
            target.rename(kept)
            print(f"checkpoint {target} existed: moved aside to {kept.name}, not overwritten", flush=True)
        elif target.exists():               # a crashed save of this step: never complete, nothing to keep
            shutil.rmtree(target)
        target.mkdir()
    comm.barrier()
    for name, engine in engines.items():
        engine.save(str(target), name, client_state)
    state_path = target / f"koda_rank{comm.rank()}.pt"
    torch.save(rank_state, state_path.with_name(state_path.name + ".tmp"))
    os.replace(state_path.with_name(state_path.name + ".tmp"), state_path)
    if comm.rank() == 0:
        for name, value in extra_state.items():
            (target / name).mkdir()
            torch.save(value, target / name / "state.pt")
    comm.barrier()

    hash_start = time.perf_counter()
    files = comm.broadcast_object(sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
                                  if comm.rank() == 0 else None)
    mine = {name: {"size": (target / name).stat().st_size, DIGEST: file_digest(target / name)}
            for name in files[comm.rank()::comm.world_size()]}
    parts = comm.all_gather_object((time.perf_counter() - hash_start, mine))
    hash_seconds = max(seconds for seconds, _ in parts)
    entries = {name: entry for _, part in parts for name, entry in part.items()}
    if comm.rank() == 0:
        record = {"format": FORMAT, "step": step, "world_size": comm.world_size(), "engines": list(engines),
                  "extra": list(extra_state), **(meta or {}), "files": dict(sorted(entries.items()))}
        _atomic_write_text(target / COMPLETE, json.dumps(record, indent=1))
        _atomic_write_text(directory / LATEST, tag)
        _prune(directory, keep)
    comm.barrier()
    size = sum(entry["size"] for entry in entries.values())
    return Saved(tag, size, time.perf_counter() - start, hash_seconds)


def verify_collective(directory: str | Path, tag: str) -> dict:
    """`verify` with the digests split over the ranks; every rank raises the same error."""
    target = Path(directory) / tag
    record = verify(directory, tag, content=False)
    names = sorted(record["files"])
    error = None
    try:
        for name in names[comm.rank()::comm.world_size()]:
            check_file(target, name, record["files"][name], content=True)
    except KodaError as err:
        error = str(err)
    errors = [e for e in comm.all_gather_object(error) if e]
    if errors:
        raise KodaError(errors[0])
    return record


def refuse_overwrite(directory: str | Path, resuming: bool) -> None:
    """A fresh start must not write over another run's checkpoints (and its metrics)."""
    tags = complete_tags(directory)
    if tags and not resuming:
        raise KodaError(f"{Path(directory).parent} already holds checkpoints (latest {tags[-1]}): pass --resume "
                        "to continue that run, or another --run-dir")


def read_extra(directory: str | Path, tag: str, name: str) -> object | None:
    """One extra-state part of checkpoint `tag` without loading any engine (None when the
    checkpoint has no such part), e.g. to learn how to build the engines before loading them."""
    record = read_record(Path(directory) / tag)
    if name not in record.get("extra", []):
        return None
    path = Path(directory) / tag / name / "state.pt"
    check_file(Path(directory) / tag, f"{name}/state.pt", record["files"].get(f"{name}/state.pt"), content=True)
    return torch.load(path, weights_only=False)


@dataclass
class Loaded:
    client_state: dict            # the first engine's DeepSpeed client state (KODA's "koda" record)
    rank_state: dict | None       # None when the saving world had no rank of this number
    extra_state: dict[str, object]
    format: int


def load(engines: dict, directory: str | Path, tag: str, load_optimizer: bool = True,
         universal: bool = False) -> Loaded:
    """Collective: every engine of `engines` from checkpoint `tag`, after checking every
    file's digest.

    universal: load through DeepSpeed's universal format (another world or expert-parallel
    size; see ``koda.distributed.universal``); the engines must have been built with it.
    """
    record = verify_collective(directory, tag)
    target = Path(directory) / tag
    client_state = None
    for name, engine in engines.items():
        ds_dir, ds_tag = engine_dir(directory, tag, name, record)
        if universal:
            from koda.distributed import universal as universal_format

            ds_dir, ds_tag = universal_format.prepare(ds_dir / ds_tag)
            with universal_format.repaired_load(engine.ds):
                state = engine.load(str(ds_dir), ds_tag, load_optimizer=load_optimizer)
        else:
            state = engine.load(str(ds_dir), ds_tag, load_optimizer=load_optimizer)
        client_state = state if client_state is None else client_state
    path = target / f"koda_rank{comm.rank()}.pt"
    rank_state = torch.load(path, weights_only=False) if path.is_file() else None
    extra = {name: torch.load(target / name / "state.pt", weights_only=False) for name in record.get("extra", [])}
    return Loaded(client_state or {}, rank_state, extra, record_format(record))


def _prune(directory: Path, keep: int) -> None:
    tags = complete_tags(directory)
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(directory / old, ignore_errors=True)
