"""One real 2-rank ZeRO-3 + AutoEP training run in fp32, shared by the conversion and
resume tests (training it once keeps the suite within its time budget)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.ranks import launch
from tests.helpers.tiny import write_run_config

STEPS = 6          # checkpoints at 2, 4 and 6


@dataclass(frozen=True)
class TrainedRun:
    config: Path          # run config YAML of the 2-rank run
    run_dir: Path
    data: object          # DataConfig

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def metrics(self) -> dict[int, dict]:
        return {r["step"]: r for r in map(json.loads, (self.run_dir / "metrics.jsonl").read_text().splitlines())}


def fp32_run_config(path: Path, data, run_dir: Path, world: int, micro: int, accum: int) -> Path:
    """The tiny model in fp32 (bf16 off) with a given batch layout; schedule as the base run."""
    config = write_run_config(path, data, run_dir, steps=STEPS, world_size=world,
                              train={"checkpoint_every": 2, "keep_checkpoints": 3, "eval_every": 100})
    ds_path = path.with_suffix(".ds.json")
    ds = json.loads(ds_path.read_text())
    ds.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accum, bf16={"enabled": False})
    ds_path.write_text(json.dumps(ds))
    return config


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> TrainedRun:
    root = tmp_path_factory.mktemp("trained")
    config = fp32_run_config(root / "run.yaml", tiny_data, root / "run", world=2, micro=2, accum=1)
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return TrainedRun(config, root / "run", tiny_data)
