"""The files of a run directory, named once.

The trainer writes them, ``koda report`` / ``koda convert`` / ``koda generate`` read them,
and tests inspect them; each used to spell the names itself. This module imports nothing
heavy (no torch), so the report tools can use it::

    <run_dir>/
      config.json        the run config as it ran (RunConfig.to_dict)
      ds_config.json     the DeepSpeed config after ``auto`` was resolved
      metrics.jsonl      one JSON object per logged step (koda.run.metrics)
      rollouts.jsonl     RL stage: rank 0's first prompt group of each logged step, rewards and all
      checkpoints/       latest, step<N>/ (koda.distributed.checkpoint)

The tokenizer is not inside the run: the run config names it (``data.tokenizer``), and a
relative name is looked up from the working directory the run started in, then from the
run directory (``tokenizer_candidates``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS = "checkpoints"
CONFIG = "config.json"
DS_CONFIG = "ds_config.json"
METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts.jsonl"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def ds_config(self) -> Path:
        return self.root / DS_CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def rollouts(self) -> Path:
        return self.root / ROLLOUTS

    @classmethod
    def of_checkpoints(cls, checkpoints: str | Path) -> RunLayout:
        """The run a ``checkpoints/`` directory belongs to."""
        return cls(Path(checkpoints).parent)

    def tokenizer_candidates(self, given: str) -> list[Path]:
        """Where the tokenizer a run config names may be, in order: absolute as written,
        else relative to the working directory, else to the run directory."""
        return [Path(given)] if Path(given).is_absolute() else [Path.cwd() / given, self.root / given]
