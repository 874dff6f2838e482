"""``koda convert``: a ZeRO-3/AutoEP training checkpoint -> a standalone model directory.

Order of checks, each a one-line ``KodaError`` before anything is written: the tag exists
and its ``COMPLETE`` record verifies (every file present at its saved size and, from
format 2 on, with its saved digest: a truncated or scribbled shard is caught here, before
DeepSpeed's unpickler sees it); the actor is found in either layout (``<tag>/actor/``, or
the tag directory itself in format 1); every DeepSpeed file opens
(a corrupt zip or pickle of the right size is caught here); the client state is KODA's, in
a format this KODA reads; the model it records is the one the run config describes and
matches every stored shape. The source is only ever opened for reading (model states in
full, optimizer states memory-mapped read-only), and the output appears atomically
(``koda.checkpoint.export``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from koda.checkpoint import hf_mixtral, record
from koda.checkpoint.export import ExportSummary, write_model_dir
from koda.checkpoint.standalone import check_state
from koda.errors import ConfigError, KodaError
from koda.model import KodaForCausalLM, ModelConfig
from koda.naming import assemble, autoep_to_koda_plan
from koda.run_layout import RunLayout

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def choose_tag(directory: Path, tag: str | None) -> str:
    """`tag`, else the one ``latest`` names, else the newest complete one (``record.resolve_tag``:
    a damaged newest checkpoint is an error, never guessed past); then every digest verified."""
    complete = record.complete_tags(directory)
    available = f"complete: {', '.join(complete)}" if complete else "no complete checkpoint there"
    if tag is not None and not (directory / tag).is_dir():
        raise KodaError(f"checkpoint directory {directory}: no tag {tag!r} ({available})")
    found = record.resolve_tag(directory, tag)
    if found is None:
        raise KodaError(f"checkpoint directory {directory}: no checkpoint to convert ({available})")
    record.verify(directory, found)         # sizes and content digests
    return found


def _model_config(state: dict, where: str) -> ModelConfig:
    fmt = record.checkpoint_format(state)
    if fmt not in record.READABLE_FORMATS:
        raise KodaError(f"{where}: written by KODA {state.get('koda_version', '?')} in checkpoint format {fmt}; "
                        f"this KODA reads formats {' and '.join(map(str, record.READABLE_FORMATS))}")
    missing = [key for key in ("step", "model", "world_size") if key not in state]
    if missing:
        raise KodaError(f"{where}: KODA state lacks {missing[0]!r} (written by another KODA version)")
    try:
        return ModelConfig.from_dict(state["model"])
    except ConfigError as err:
        raise KodaError(f"{where}: its model record is not readable by this KODA version ({err})") from None


def _run_config(directory: Path) -> dict | None:
    path = RunLayout.of_checkpoints(directory).config
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise KodaError(f"run config {path}: not valid JSON") from None


def _check_against_run(model: ModelConfig, run: dict | None, where: str, run_path: Path) -> None:
    recorded = (run or {}).get("model")
    if not recorded:
        return
    ours = model.to_dict()
    for key in sorted(ours):
        if key in recorded and recorded[key] != ours[key]:
            raise KodaError(f"{where}: a checkpoint of another model than {run_path} describes "
                            f"(model.{key} {ours[key]!r} in the checkpoint, {recorded[key]!r} in the run config)")


def _tokenizer(explicit: str | None, run: dict | None, directory: Path, model: ModelConfig) -> Path:
    from koda.data.tokenizer import Tokenizer

    if explicit is not None:
        path = Path(explicit)
    else:
        given = ((run or {}).get("data") or {}).get("tokenizer")
        if not given:
            raise KodaError(f"no run config beside {directory} names a tokenizer: pass --tokenizer PATH")
        candidates = RunLayout.of_checkpoints(directory).tokenizer_candidates(given)
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise KodaError(f"tokenizer {path}: not found (pass --tokenizer PATH)")
    pieces = Tokenizer(path).vocab_size
    if pieces != model.vocab_size:
        raise KodaError(f"tokenizer {path} has {pieces} pieces, the model's vocabulary is {model.vocab_size}")
    return path


@dataclass(frozen=True)
class TrainingCheckpoint:
    """One verified KODA checkpoint, opened for reading (tensors are built on demand)."""

    directory: Path            # the checkpoints/ dir
    tag: str
    model: ModelConfig
    koda_state: dict           # client_state["koda"]: step, world_size, model, ...
    run: dict | None           # the run config beside it, if any
    shapes: dict[str, tuple]   # KODA name -> shape, in the model's own order
    tensor: Callable[[str], torch.Tensor]   # KODA name -> full fp32 tensor
    ds_version: str | None     # the DeepSpeed that wrote it

    @property
    def source(self) -> dict:
        """Provenance recorded in the standalone config.json."""
        return {"checkpoint": str(self.directory.resolve()), "tag": self.tag, "step": self.koda_state["step"],
                "tokens": self.koda_state.get("tokens"), "world_size": self.koda_state["world_size"],
                "deepspeed": self.ds_version}


def open_checkpoint(checkpoint: str | Path, tag: str | None = None) -> TrainingCheckpoint:
    """Locate, verify and check a checkpoint (every refusal in the module notes)."""
    directory, tag = record.locate(checkpoint, tag)
    tag = choose_tag(directory, tag)
    where = f"checkpoint {directory / tag}"

    from koda.checkpoint.zero3 import Zero3Checkpoint

    ds_dir, ds_tag = record.engine_dir(directory, tag, record.ACTOR)     # format 1 or 2
    reader = Zero3Checkpoint(ds_dir / ds_tag)
    state = reader.client_state.get("koda")
    if not isinstance(state, dict):
        raise KodaError(f"{where}: not written by KODA (no 'koda' client state)")
    model = _model_config(state, where)
    run = _run_config(directory)
    _check_against_run(model, run, where, RunLayout.of_checkpoints(directory).config)
    plan = autoep_to_koda_plan(reader.shapes, reader.blocks)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in KodaForCausalLM(model).state_dict().items()}
    check_state({name: torch.empty(shape, device="meta") for name, (shape, _) in plan.items()}, expected,
                f"{where} (a checkpoint of another model than its KODA record describes)")
    order = {name: plan[name][0] for name in expected}        # the model's own order
    build = lambda name: assemble(plan[name][1], reader.tensor)   # one KODA tensor, on demand
    return TrainingCheckpoint(directory, tag, model, state, run, order, build, reader.client_state.get("ds_version"))


def convert_checkpoint(checkpoint: str | Path, output: str | Path, *, tag: str | None = None, dtype: str = "fp32",
                       fmt: str = "koda", max_shard_size: str | int = "2GB",
                       tokenizer: str | None = None) -> ExportSummary:
    """Convert one checkpoint (default: ``latest``) and return what was written."""
    if dtype not in DTYPES:
        raise KodaError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if Path(output).exists():
        raise KodaError(f"output {output} already exists (remove it or choose another --output)")
    source = open_checkpoint(checkpoint, tag)
    if fmt == "hf-mixtral":
        hf_mixtral.check_exportable(source.model)
    tokenizer_path = _tokenizer(tokenizer, source.run, source.directory, source.model)
    return write_model_dir(output, source.model, source.shapes, source.tensor, dtype=DTYPES[dtype], fmt=fmt,
                           tokenizer=tokenizer_path, source=source.source,
                           max_shard_size=max_shard_size)


def load_from_checkpoint(checkpoint: str | Path, tag: str | None = None,
                         dtype: torch.dtype = torch.float32) -> KodaForCausalLM:
    """The model of a training checkpoint, in this process, without writing anything
    (``koda generate --checkpoint``): the same reading and checks as ``koda convert``."""
    source = open_checkpoint(checkpoint, tag)
    with torch.device("meta"):
        model = KodaForCausalLM(source.model)
    model.load_state_dict({name: source.tensor(name).to(dtype) for name in source.shapes}, assign=True)
    return model.eval()
