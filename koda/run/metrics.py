"""The metrics stream: one dict per logged step, to the console, a JSON-lines file and W&B.

``<run>/metrics.jsonl`` holds one JSON object per line: ``{"step": int, "time": unix seconds,
<name>: value, ...}``. Names are slash-separated groups W&B charts by: ``train/loss``,
``train/ce``, ``train/aux_loss``, ``train/z_loss``, ``train/lr``, ``train/grad_norm``,
``train/skipped_steps`` (non-finite steps discarded so far), ``perf/tokens_per_s``, ``perf/mfu``,
``perf/step_s``, ``moe/load_max_min``, ``moe/load_std``, ``moe/utilisation`` (worst layer),
``moe/layer<N>/load_max_min``, ``moe/layer<N>/load_std``, ``moe/layer<N>/utilisation``,
``moe/layer<N>/tokens`` and ``moe/layer<N>/share`` (lists, per expert; see
``koda.run.router_probe.load_stats``), ``mem/rss_gb``,
``mem/peak_rss_gb`` (``mem/gpu_peak_gb`` on GPUs), ``val/loss``, ``val/ppl``; ``dfa/alignment``,
``dfa/embedding/alignment``, ``dfa/layer<N>/alignment`` under ``train.feedback: dfa``;
``optim/latency_scale/dense`` and ``optim/latency_scale/expert`` (lists, per rank; the first
logged step only) with ``optimizer.kappa`` > 0. Later stages add
their own groups (``rl/``, ``gan/``) through the same ``log`` call. ``koda report`` reads
this file. A run starting at step S keeps only the lines before it (and S's own line when
S > 0, logged before that checkpoint was saved): a resumed run, or one restarted from step 0,
holds each step once, on the trajectory the model actually took.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from pathlib import Path

from koda.config.run import LoggingConfig
from koda.run_layout import METRICS as METRICS_FILE


def wandb_mode(configured: str) -> str:
    """``auto`` means online only when credentials exist: a fresh machine never blocks on a login."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if configured != "auto":
        return configured
    netrc = Path.home() / ".netrc"
    has_login = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return "online" if os.environ.get("WANDB_API_KEY") or has_login else "offline"


def truncate_after(path: Path, step: int) -> None:
    """Drop metric lines with step > `step` (atomically); -1 drops them all."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Rank 0's sink for the metrics stream (other ranks construct it with enabled=False)."""

    def __init__(self, run_dir: str | Path, cfg: LoggingConfig, run_config: dict, total_steps: int,
                 enabled: bool, start_step: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self._wandb = None
        self._bar = None
        if not enabled:
            return
        truncate_after(self.path, start_step if start_step > 0 else -1)
        self._file = self.path.open("a", buffering=1)
        mode = wandb_mode(cfg.wandb_mode)
        if mode != "disabled":
            self._wandb = _start_wandb(Path(run_dir), cfg, run_config, mode)
        if cfg.progress_bar and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in metrics.items() if not isinstance(v, list)}, step=step)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()


def _start_wandb(run_dir: Path, cfg: LoggingConfig, run_config: dict, mode: str, silent: bool = False):
    """silent: W&B prints nothing (no banner, no run summary at ``finish``), for commands whose
    own output is the point (``koda eval``); the run is logged all the same."""
    import wandb

    id_file = run_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
    id_file.write_text(run_id)
    return wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, name=cfg.run_name or run_dir.name,
                      id=run_id, resume="allow", dir=str(run_dir), config=run_config, mode=mode,
                      settings=wandb.Settings(silent=True) if silent else None)
