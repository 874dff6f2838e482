"""What every stage does before and after its loop, on every rank.

``open_run`` is the prelude (checked again on the rank: a launcher such as ``deepspeed
--module koda.train`` skips ``koda train``'s own checks): refuse to write over another run,
build the tokenizer and shards once on rank 0, pick the checkpoint to resume. ``run_stage``
writes the run files, opens the metrics stream and drives the stage through ``RunLoop``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from koda.config.run import RunConfig
from koda.data.prepare import prepare
from koda.distributed import checkpoint, comm
from koda.errors import KodaError
from koda.run.loop import LoopState, RunLoop, Stage
from koda.run.metrics import MetricsLogger
from koda.run_layout import RunLayout


@dataclass
class RunStart:
    layout: RunLayout
    tokenizer: object             # koda.data.tokenizer.Tokenizer
    found: str | None             # the checkpoint tag to resume, None for a fresh start


def open_run(cfg: RunConfig, resume: bool, resume_tag: str | None, resume_older: bool = False) -> RunStart:
    """Collective prelude; see the module docstring."""
    layout = RunLayout(cfg.run_dir)
    resuming = bool(resume or resume_tag)
    if comm.rank() == 0:
        checkpoint.refuse_overwrite(layout.checkpoints, resuming)
        layout.root.mkdir(parents=True, exist_ok=True)
        prepare(cfg.data, cfg.model.vocab_size)
    comm.barrier()
    tokenizer = prepare(cfg.data, cfg.model.vocab_size, build_missing=False, log=lambda *_: None)
    found = None
    if resuming:
        found = checkpoint.resolve_tag(layout.checkpoints, resume_tag, older=resume_older,
                                       log=print if comm.rank() == 0 else None)
        if found is None and comm.rank() == 0:
            print(f"no complete checkpoint in {layout.checkpoints}: starting from step 0")
    return RunStart(layout, tokenizer, found)


def check_model(record: dict, cfg: RunConfig, where: Path) -> None:
    """A checkpoint resumes only into the model it was written for."""
    if record.get("model") != cfg.model.to_dict():
        raise KodaError(f"checkpoint {where}: written for another model configuration")


def run_stage(stage: Stage, cfg: RunConfig, layout: RunLayout, state: LoopState, ds_plan: dict,
              summary: str) -> dict:
    """Write ``config.json`` / ``ds_config.json``, open the metrics stream (dropping lines past
    the resumed step, so each step appears once), print `summary` (the stage's one line about
    the run, saying where it resumed) and run the loop."""
    if comm.rank() == 0:
        layout.config.write_text(json.dumps(cfg.to_dict(), indent=1))
        layout.ds_config.write_text(json.dumps(ds_plan, indent=1))
    metrics = MetricsLogger(layout.root, cfg.logging, cfg.to_dict(), cfg.train.steps,
                            enabled=comm.rank() == 0, start_step=state.step)
    stage.metrics = metrics
    metrics.print(summary)
    loop = RunLoop(stage, cfg.train, metrics, state,
                   last_checkpoint=lambda: checkpoint.latest_tag(layout.checkpoints))
    return loop.run()
