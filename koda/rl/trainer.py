"""The RL stage's loop on one rank: ``koda train --stage rl``.

Builds the engines (``koda.rl.engines``), the train split of the task set and a sandbox pool,
then runs ``RLStep`` per step with pre-training's step boundary: the ranks agree in one
all-reduce on a non-finite metric (an error naming the step), on a stop signal
(SIGTERM/SIGUSR1: save, leave the loop) and on the time budget (``train.time_budget_s``,
rank 0's clock). Every step is logged (``rl/``, ``gan/``, ``time/``, ``perf/`` groups).

Checkpoints hold every trained engine (actor, critic, encoder) plus the extra part ``rl``:
the advantage tracker's moments, the step, and where the starting weights came from. The
frozen reference policy is not saved: it is rebuilt from those starting weights (the
``--init-from`` source, or the seed's draw), which must still be there on resume. Sampling,
Gumbel and penalty noise are functions of (seed, step, rank), so a resumed run repeats the
uninterrupted one (``tests/rl/test_rl_resume.py`` checks every logged metric).
"""

from __future__ import annotations

import json
import math
import time

import torch

from koda import __version__
from koda.data.prepare import prepare
from koda.distributed import checkpoint, comm, ds_config, preemption
from koda.distributed.accelerator import supports_bf16
from koda.distributed.rank_start import start_rank
from koda.errors import KodaError
from koda.rl.engines import build_rl_engines, rl_plans
from koda.rl.step import RLStep
from koda.run_layout import RunLayout
from koda.sandbox import SandboxPolicy, SandboxPool
from koda.tasks import build_tasks
from koda.train.config import RunConfig
from koda.train.init_from import initial_state
from koda.train.metrics import MetricsLogger

STAGE = "rl"
EXTRA = "rl"          # the checkpoint's extra-state part


def check_config(cfg: RunConfig, world_size: int) -> dict:
    """What ``koda train --stage rl`` checks before starting ranks; returns the resolved plans
    (actor, critic, encoder, reference)."""
    if cfg.optimizer is not None:
        raise KodaError("the run config's optimizer section applies to pre-training; --stage rl uses the "
                        "DeepSpeed configs' optimizers (remove the optimizer section)")
    return rl_plans(ds_config.load(cfg.ds_config), cfg.model, world_size, cfg.train.steps, cfg.rl, supports_bf16())


class RLTrainer:
    def __init__(self, cfg: RunConfig, resume: bool = False, resume_tag: str | None = None,
                 init_from: str | None = None):
        self.stop = start_rank()
        self.cfg, self.rank, self.world = cfg, comm.rank(), comm.world_size()
        self.layout = RunLayout(cfg.run_dir)
        self.ckpt_dir = self.layout.checkpoints
        resuming = bool(resume or resume_tag)
        if self.rank == 0:
            checkpoint.refuse_overwrite(self.ckpt_dir, resuming)
            self.layout.root.mkdir(parents=True, exist_ok=True)
            prepare(cfg.data, cfg.model.vocab_size)
        comm.barrier()
        tokenizer = prepare(cfg.data, cfg.model.vocab_size, build_missing=False, log=lambda *_: None)

        found = checkpoint.resolve_tag(self.ckpt_dir, resume_tag) if resuming else None
        saved = checkpoint.read_extra(self.ckpt_dir, found, EXTRA) if found else None
        if found and saved is None:
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: not written by the RL stage (no '{EXTRA}' part); "
                            "start the RL stage from it with --init-from instead")
        self.init_from = saved["init_from"] if saved else init_from
        plans = check_config(cfg, self.world)
        # On resume the actor's weights come from the checkpoint; the source is read again
        # only for the frozen reference.
        need_source = self.init_from is not None and (not found or cfg.rl.uses_reference)
        initial = initial_state(self.init_from, cfg.model) if need_source else None
        self.engines = build_rl_engines(cfg.model, plans, cfg.rl, seed=cfg.train.seed,
                                        encoder_dim=cfg.rl.encoder_dim, initial=initial)
        rl = cfg.rl
        tasks = [t for t in build_tasks(seed=rl.task_seed, train=rl.tasks_train, heldout=rl.tasks_heldout)
                 if t.split == "train"]
        self.pool = SandboxPool(workers=rl.judge_workers, policy=SandboxPolicy())
        self.rl_step = RLStep(self.engines, tokenizer, tasks, rl, seed=cfg.train.seed, pool=self.pool, moe=cfg.moe)
        self.step, self.elapsed = 0, 0.0
        if found:
            self._resume(found, saved)
        if self.rank == 0:
            self.layout.config.write_text(json.dumps(cfg.to_dict(), indent=1))
            self.layout.ds_config.write_text(json.dumps(plans["actor"].config, indent=1))
        self.metrics = MetricsLogger(self.layout.root, cfg.logging, cfg.to_dict(), cfg.train.steps,
                                     enabled=self.rank == 0, resume_step=self.step if found else None)
        self.metrics.print(f"RL stage: world {self.world}, expert-parallel {plans['actor'].ep_size}, engines "
                           f"{', '.join(self._engine_names())}, {len(tasks)} train tasks"
                           + (f", resumed at step {self.step}" if found else "")
                           + (f", weights from {self.init_from}" if self.init_from else ""))

    def _engine_names(self) -> list[str]:
        return [*self.engines.items(), *(["reference (frozen)"] if self.engines.reference is not None else [])]

    def _resume(self, found: str, saved: dict) -> None:
        loaded = checkpoint.load(self.engines.items(), self.ckpt_dir, found)
        state = loaded.client_state.get("koda") or {}
        if state.get("model") != self.cfg.model.to_dict():
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: written for another model configuration")
        self.step, self.elapsed = saved["step"], saved["elapsed_s"]
        self.rl_step.load_state_dict(saved["step_state"])
        if loaded.rank_state is None:
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: has no state for rank {self.rank} (saved by "
                            f"{state.get('world_size')} ranks); the RL stage resumes on the same world size")
        checkpoint.set_rng_state(loaded.rank_state["rng"])

    def _save(self) -> None:
        koda_state = {"koda": {"step": self.step, "stage": STAGE, "world_size": self.world,
                               "model": self.cfg.model.to_dict(), "format": checkpoint.FORMAT,
                               "koda_version": __version__}}
        extra = {EXTRA: {"step": self.step, "elapsed_s": self.elapsed, "init_from": self.init_from,
                         "step_state": self.rl_step.state_dict(), "rl": self.cfg.to_dict()["rl"]}}
        saved = checkpoint.save(self.engines.items(), self.ckpt_dir, self.step, koda_state,
                                {"rng": checkpoint.rng_state()}, self.cfg.train.keep_checkpoints, extra)
        self.metrics.print(f"saved checkpoint {self.ckpt_dir / saved.tag} ({saved.bytes / 1e6:,.1f} MB in "
                           f"{saved.seconds:.2f} s)")

    def _boundary(self, metrics: dict) -> str | None:
        """Collective: raise on a non-finite metric; the reason to stop now (signal or time
        budget), or None."""
        received = [float(self.stop.signal == sig) for sig in preemption.STOP_SIGNALS]
        budget = self.cfg.train.time_budget_s
        over = float(self.rank == 0 and budget is not None and self.elapsed >= budget)
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        flags = comm.all_reduce_sum(torch.tensor([*received, over]))
        if bad:          # the metrics are rank means already: every rank sees the same ones
            raise KodaError(f"RL step {self.step}: non-finite {', '.join(bad[:3])}; stopped without saving "
                            f"(last checkpoint: {checkpoint.resolve_tag(self.ckpt_dir) or 'none'})")
        *counts, over_budget = (bool(v) for v in flags.tolist())
        signal = next((sig.name for sig, seen in zip(preemption.STOP_SIGNALS, counts, strict=True) if seen), None)
        return signal or ("time budget" if over_budget else None)

    def run(self) -> dict:
        train, last = self.cfg.train, {}
        try:
            while self.step < train.steps:
                start = time.perf_counter()
                metrics = self.rl_step.run(self.step)
                self.step += 1
                seconds = time.perf_counter() - start
                self.elapsed += seconds
                metrics |= {"perf/step_s": seconds, "perf/elapsed_s": self.elapsed,
                            "train/lr": self.engines.actor.lr(), "train/grad_norm": self.engines.actor.grad_norm()}
                stop = self._boundary(metrics)
                self.metrics.advance()
                if self.step % train.log_every == 0 or self.step == train.steps or stop:
                    self.metrics.log(self.step, metrics)
                    self.metrics.print(_console_line(self.step, train.steps, metrics))
                last = metrics
                if self.step % train.checkpoint_every == 0 or self.step == train.steps or stop:
                    self._save()
                if stop:
                    self.metrics.print(f"stopped at step {self.step}/{train.steps} on {stop}: checkpoint saved"
                                       + ("; continue with --resume" if stop != "time budget" else ""))
                    break
        finally:
            self.metrics.close()
            self.rl_step.close()
            self.pool.close()
        return last


def _console_line(step: int, total: int, m: dict) -> str:
    parts = [f"rl step {step}/{total}"]
    for key, label, fmt in (("rl/reward/total", "reward", ".3f"), ("rl/reward/tests", "tests", ".2f"),
                            ("rl/ce", "ce", ".3f"), ("rl/policy_loss", "pg", ".3f"), ("rl/kl_ref", "kl", ".4f"),
                            ("gan/wasserstein", "W", ".3f"), ("perf/step_s", "s/step", ".1f"),
                            ("perf/judge_hidden_fraction", "judge hidden", ".0%")):
        if key in m:
            parts.append(f"{label} {m[key]:{fmt}}")
    return "  ".join(parts)
