"""The debug-size model and data every test uses."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from koda.config.run import DataConfig
from koda.data.prepare import prepare
from koda.distributed import ds_config
from koda.model.config import ModelConfig

TINY = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96,
                   n_experts=4, top_k=2, dense_ffn_hidden=128, max_seq_len=64)


def tiny_data(root: Path) -> DataConfig:
    return DataConfig(sources=("stdlib",), max_corpus_mb=1.0, tokenizer=str(root / "tok.model"),
                      tokenizer_corpus_mb=0.5, shards_dir=str(root / "shards"), val_fraction=0.1, seq_len=64)


def build_tiny_data(root: Path) -> DataConfig:
    data = tiny_data(root)
    prepare(data, TINY.vocab_size, log=lambda *_: None)
    return data


def write_run_config(path: Path, data: DataConfig, run_dir: Path, steps: int, ds: dict | None = None,
                     **sections) -> Path:
    """A run config YAML for the tiny model on `data`; `sections` override/extend sections,
    `ds` top-level sections of its DeepSpeed config (zero3_ep_smoke.json)."""
    ds = copy.deepcopy({**ds_config.load("zero3_ep_smoke.json"), **(ds or {})})
    ds["scheduler"]["params"]["warmup_num_steps"] = max(1, steps // 10)
    ds_path = path.with_suffix(".ds.json")
    ds_path.write_text(json.dumps(ds))
    raw = {
        "model": {"preset": "smoke", **TINY.to_dict()},
        "ds_config": str(ds_path),
        "run_dir": str(run_dir),
        "world_size": 2,
        "data": {**data.__dict__, "sources": list(data.sources)},
        "train": {"steps": steps, "log_every": 1, "eval_every": steps, "eval_batches": 2,
                  "checkpoint_every": steps, "seed": 7},
        "logging": {"wandb_mode": "disabled", "peak_tflops": 1.0, "progress_bar": False},
    }
    if "rl" in sections:            # the RL stage evaluates every held-out task: no eval_batches
        del raw["train"]["eval_batches"]
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(raw))
    return path
