"""What a checkpoint holds, read and written here only; and the one resolver of tags and paths.

A checkpoint is a tag directory ``<run>/checkpoints/step<N>/`` whose ``COMPLETE`` record is
written last (``koda.distributed.checkpoint.save``): format, step, world size, engines, extra
parts, every file's size and digest, and (from this KODA on) the stage that wrote it, the
expert-parallel size, the optimizer whose states it holds and the source of its starting
weights. ``CheckpointRecord`` is the typed view of it; older records lack the last four, and
their stage is told by the extra part the RL stage writes. Resume, ``koda convert``,
``--init-from``, ``koda eval``/``generate``, pruning and the RL stage find checkpoints through
``locate`` and ``resolve_tag``. No torch here: tools that only look at checkpoints stay light.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from koda.errors import KodaError
from koda.run_layout import CHECKPOINTS

COMPLETE = "COMPLETE"
LATEST = "latest"
ACTOR = "actor"        # the policy engine; the one engine of format 1

# Layout of KODA's part of a checkpoint (client_state["koda"], the tag directory, COMPLETE).
# Bumped on an incompatible change, so tools refuse what they cannot read instead of
# misreading it. Checkpoints written before the field existed are format 1.
FORMAT = 2
READABLE_FORMATS = (1, 2)
DIGEST = "sha256"     # faster than blake2b where CPUs have SHA instructions (tools/bench_checkpoint_digest.py)

def checkpoint_format(koda_state: dict) -> int:
    return int(koda_state.get("format", 1))


def tag_for(step: int) -> str:
    return f"step{step:08d}"


_TAG = re.compile(r"step\d{8}")


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, DIGEST).hexdigest()


def record_format(record: dict) -> int:
    return int(record.get("format", 1))


def read_record(target: Path) -> dict:
    try:
        record = json.loads((target / COMPLETE).read_text())
    except FileNotFoundError:
        raise KodaError(f"checkpoint {target}: incomplete (no {COMPLETE} marker; the save was interrupted)") from None
    except ValueError:
        raise KodaError(f"checkpoint {target}: corrupt {COMPLETE} marker") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise KodaError(f"checkpoint {target}: corrupt {COMPLETE} marker")
    fmt = record_format(record)
    if fmt not in READABLE_FORMATS:
        raise KodaError(f"checkpoint {target}: layout format {fmt}; this KODA reads formats "
                        f"{' and '.join(map(str, READABLE_FORMATS))}")
    return record


def check_file(target: Path, name: str, entry, content: bool) -> None:
    path = target / name
    size = entry if isinstance(entry, int) else entry["size"]      # format 1 records sizes only
    if not path.is_file():
        raise KodaError(f"checkpoint {target}: file {name} is missing")
    if path.stat().st_size != size:
        raise KodaError(f"checkpoint {target}: file {name} is {path.stat().st_size} bytes, "
                        f"{size} when saved (truncated or corrupt)")
    if content and isinstance(entry, dict) and file_digest(path) != entry[DIGEST]:
        raise KodaError(f"checkpoint {target}: file {name} differs from the one saved ({DIGEST} digest "
                        "mismatch: corrupt)")


def verify(directory: str | Path, tag: str, content: bool = True) -> dict:
    """The COMPLETE record of `tag`, after checking every recorded file is present, of its
    saved size and (content=True, format 2) of its saved digest."""
    target = Path(directory) / tag
    record = read_record(target)
    for name, entry in record["files"].items():
        check_file(target, name, entry, content=False)
    if content:
        for name, entry in record["files"].items():
            check_file(target, name, entry, content=True)
    return record


def complete_tags(directory: str | Path) -> list[str]:
    """Tags with a COMPLETE marker, oldest first (tags sort by step). Only ``step<N>`` names:
    a damaged checkpoint moved aside by ``save`` is neither resumed nor pruned."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.parent.name for p in directory.glob(f"*/{COMPLETE}") if _TAG.fullmatch(p.parent.name))


def latest_tag(directory: str | Path) -> str | None:
    """The tag ``latest`` names, else the newest complete one; unverified (for messages)."""
    latest = Path(directory) / LATEST
    if latest.is_file():
        return latest.read_text().strip()
    tags = complete_tags(directory)
    return tags[-1] if tags else None


def resolve_tag(directory: str | Path, tag: str | None = None, *, older: bool = False, log=None) -> str | None:
    """The checkpoint to resume: `tag` if given, else the newest (the one ``latest`` names);
    None when nothing was ever completed. A damaged newest checkpoint (a file missing or of
    another size; with `older`, also a digest mismatch) is refused in one line naming the
    file, never guessed past: with `older` the newest older complete checkpoint is taken and
    `log` says which. A damaged checkpoint is never modified or deleted here. Without
    `older`, digests are checked by ``load``, once, split over the ranks."""
    directory = Path(directory)
    if tag is not None:
        verify(directory, tag, content=False)
        return tag
    candidates = complete_tags(directory)[::-1]
    newest = latest_tag(directory)
    if newest is not None:              # what ``latest`` names comes first (written after COMPLETE)
        candidates = [newest, *(c for c in candidates if c != newest)]
    if not candidates:
        return None
    damaged = []
    for candidate in candidates:
        try:
            verify(directory, candidate, content=older)
        except KodaError as err:
            if not older:
                raise KodaError(f"{err}; the newest checkpoint {candidate} is damaged and left as it is (to resume "
                                "from the newest older complete one: --resume --resume-older)") from None
            damaged.append(candidate)
            continue
        if damaged and log is not None:
            log(f"checkpoint {', '.join(damaged)} damaged (left as it is): resuming from the older {candidate}")
        return candidate
    raise KodaError(f"checkpoints {directory}: every complete checkpoint is damaged ({', '.join(damaged)})")


@dataclass(frozen=True)
class CheckpointRecord:
    """The typed COMPLETE record of one checkpoint."""

    tag: str
    format: int
    step: int
    world_size: int
    engines: tuple[str, ...]          # DeepSpeed engines: actor, critic, encoder
    extra: tuple[str, ...]            # replicated extra parts (the RL stage's "rl")
    stage: str                        # "pretrain" or "rl"
    ep_size: int | None               # expert-parallel size of the writing run (None: older record)
    optimizer: str | None             # "deepspeed" or "koda:<name>" (None: older record)
    source: str | None                # --init-from source of the starting weights, if any

    @classmethod
    def from_dict(cls, tag: str, record: dict) -> CheckpointRecord:
        extra = tuple(record.get("extra", []))
        return cls(tag, record_format(record), int(record.get("step", -1)), int(record.get("world_size", 0)),
                   tuple(record.get("engines", ["actor"])), extra, record.get("stage", "rl" if "rl" in extra else
                                                                          "pretrain"),
                   record.get("ep_size"), record.get("optimizer"), record.get("source"))


def read(directory: str | Path, tag: str, content: bool = False) -> CheckpointRecord:
    """The verified record of `tag` (sizes; with `content`, digests too)."""
    return CheckpointRecord.from_dict(tag, verify(directory, tag, content=content))


def is_training_checkpoint(path: str | Path) -> bool:
    """A run directory, its checkpoints/ directory, or one tag directory."""
    path = Path(path)
    return (path / CHECKPOINTS).is_dir() or (path / LATEST).is_file() or (path / COMPLETE).is_file()


def locate(path: str | Path, tag: str | None = None) -> tuple[Path, str | None]:
    """(checkpoints dir, tag) from a run dir, its ``checkpoints/`` dir or one tag dir."""
    path = Path(path)
    if not path.is_dir():
        raise KodaError(f"checkpoint directory {path}: not found")
    if (path / COMPLETE).is_file() and tag is None:
        return path.parent, path.name
    if (path / CHECKPOINTS).is_dir():
        path = path / CHECKPOINTS
    return path, tag


def run_dir_of(path: str | Path) -> Path:
    """The run directory a run, checkpoints/ or tag path belongs to."""
    path = Path(path)
    if (path / CHECKPOINTS).is_dir():
        return path
    return path.parent if (path / LATEST).is_file() or not (path / COMPLETE).is_file() else path.parent.parent


def engine_dir(directory: str | Path, tag: str, engine: str = ACTOR, record: dict | None = None) -> tuple[Path, str]:
    """(load dir, DeepSpeed tag) holding `engine`'s DeepSpeed files: ``(<ckpts>/<tag>, engine)``
    in format 2, ``(<ckpts>, tag)`` for the one engine (the actor) of format 1."""
    directory = Path(directory)
    record = record if record is not None else read_record(directory / tag)
    if record_format(record) == 1:
        if engine != ACTOR:
            raise KodaError(f"checkpoint {directory / tag}: format 1 holds only the {ACTOR}, no {engine}")
        return directory, tag
    if engine not in record.get("engines", []):
        raise KodaError(f"checkpoint {directory / tag}: no engine {engine!r} "
                        f"(it holds {', '.join(record.get('engines', [])) or 'none'})")
    return directory / tag, engine
