"""Synthetic run directories shaped like the trainer's (metrics.jsonl, config.json, ds_config.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from koda.model.config import PRESETS

DS_CONFIG = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": 16,
             "gradient_clipping": 1.0, "bf16": {"enabled": True},
             "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.1}},
             "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 40, "warmup_num_steps": 10}},
             "zero_optimization": {"stage": 3}, "expert_parallel": {"enabled": True, "autoep_size": 2}}


def record(step: int, offset: float = 0.0, layers: int = 2, experts: int = 4, rl: bool = False,
           val: bool = False) -> dict:
    """One logged step: loss falling from ~8 by `offset`, an uneven routing split per layer."""
    loss = 8.0 * math.exp(-step / 30) + 2.0 + offset
    rec = {"step": step, "time": 1000.0 + 2.0 * step, "train/loss": loss + 0.01, "train/ce": loss,
           "train/aux_loss": 1.0 + 0.001 * step, "train/z_loss": 2.0, "train/lr": 3e-3 * min(1.0, step / 10),
           "train/grad_norm": 5.0 / (1 + step), "perf/tokens_per_s": 3000.0 + step, "perf/step_s": 0.7,
           "perf/mfu": 0.25, "mem/rss_gb": 1.0 + step / 100, "mem/peak_rss_gb": 1.1 + step / 100}
    for layer in range(layers):
        counts = [100 * (e + 1 + layer) for e in range(experts)]
        rec[f"moe/layer{layer}/tokens"] = counts
        rec[f"moe/layer{layer}/load_max_min"] = max(counts) / min(counts)
    rec["moe/load_max_min"] = max(rec[f"moe/layer{i}/load_max_min"] for i in range(layers))
    if rl:
        rec.update({"rl/reward_pass": 0.1 * step, "rl/reward_complexity": -0.05 * step, "rl/kl": 0.01})
    if val:
        rec.update({"val/loss": loss + 0.3, "val/ppl": math.exp(loss + 0.3)})
    return rec


def write_run(path: Path, steps: int = 40, log_every: int = 2, eval_every: int = 10, configs: bool = True,
              **kwargs) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record(s, val=s % eval_every == 0, **kwargs))
             for s in range(log_every, steps + 1, log_every)]
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if configs:
        config = {"model": PRESETS["smoke"].to_dict(), "world_size": 2, "data": {"seq_len": 256},
                  "train": {"steps": steps}}
        (path / "config.json").write_text(json.dumps(config))
        (path / "ds_config.json").write_text(json.dumps(DS_CONFIG))
    return path


def final_val_loss(steps: int = 40, offset: float = 0.0) -> float:
    return record(steps, offset=offset, val=True)["val/loss"]
