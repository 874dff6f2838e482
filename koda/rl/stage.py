"""The RL stage on one rank: ``koda train --stage rl``.

Builds the engines (``koda.rl.engines``), the train split of the task set and a sandbox pool,
and runs ``RLStep`` as the step of ``koda.run.loop.RunLoop`` (the same step boundary, stop
signals, time budget, non-finite policy and cadence as pre-training). Every step's metrics
are rank means already (``rl/``, ``gan/``, ``time/``, ``perf/`` groups); the loop logs the
last step's every ``train.log_every`` steps.

Checkpoints hold every trained engine (actor, critic, encoder) plus the extra part ``rl``:
the advantage tracker's moments and where the starting weights came from. The frozen
reference policy is not saved: it is rebuilt from those starting weights (the
``--init-from`` source), which must still be there on resume. Sampling, Gumbel and penalty
noise are functions of (seed, step, rank), so a resumed run repeats the uninterrupted one
(``tests/rl/test_rl_resume.py`` checks every logged metric).
"""

from __future__ import annotations

import json
import math

from koda import __version__
from koda.checkpoint import record
from koda.config.run import RunConfig
from koda.distributed import checkpoint, comm, ds_config
from koda.distributed.accelerator import supports_bf16
from koda.errors import KodaError
from koda.rl.engines import build_rl_engines, rl_plans
from koda.rl.probe import heldout_probe, probe_tasks
from koda.rl.step import RLStep
from koda.run.init_from import initial_state
from koda.run.loop import LoopState, Stage, StepOutcome
from koda.run.start import RunStart, check_model, open_run, run_stage
from koda.sandbox import SandboxPolicy, SandboxPool
from koda.tasks import build_tasks

STAGE = "rl"
EXTRA = "rl"          # the checkpoint's extra-state part


def check_config(cfg: RunConfig, world_size: int) -> dict:
    """What ``koda train --stage rl`` checks before starting ranks; returns the resolved plans
    (actor, critic, encoder, reference)."""
    if cfg.optimizer is not None:
        raise KodaError("the run config's optimizer section applies to pre-training; --stage rl uses the "
                        "DeepSpeed configs' optimizers (remove the optimizer section)")
    if cfg.rl.probe_tasks and cfg.rl.probe_max_new_tokens >= cfg.model.max_seq_len:
        raise KodaError(f"rl.probe_max_new_tokens {cfg.rl.probe_max_new_tokens} leaves no room for a prompt in "
                        f"model.max_seq_len {cfg.model.max_seq_len}")
    return rl_plans(ds_config.load(cfg.ds_config), cfg.model, world_size, cfg.train.steps, cfg.rl, supports_bf16())


def check_source(init_from: str | None, random_weights: bool) -> None:
    """RL from random weights never passes a test: it must be asked for by name."""
    if init_from is None and not random_weights:
        raise KodaError("--stage rl needs --init-from RUN_OR_CKPT (a pre-trained model); pass --random-weights to "
                        "start from random weights on purpose")
    if init_from is not None and random_weights:
        raise KodaError("--random-weights and --init-from contradict each other: give one")


class RLStage(Stage):
    name = "rl"
    console = (("rl/reward/total", "reward", ".3f"), ("rl/reward/tests", "tests", ".2f"), ("rl/ce", "ce", ".3f"),
               ("rl/policy_loss", "pg", ".3f"), ("rl/kl_ref", "kl", ".4f"), ("gan/wasserstein", "W", ".3f"),
               ("probe/pass_rate", "probe pass", ".3f"), ("perf/step_s", "s/step", ".1f"),
               ("perf/judge_hidden_fraction", "judge hidden", ".0%"))

    def __init__(self, cfg: RunConfig, start: RunStart, init_from: str | None = None):
        self.cfg, self.rank, self.world = cfg, comm.rank(), comm.world_size()
        self.ckpt_dir = start.layout.checkpoints
        self.rollouts = start.layout.rollouts
        self.metrics = None
        found = start.found
        saved = checkpoint.read_extra(self.ckpt_dir, found, EXTRA) if found else None
        if found and (record.read(self.ckpt_dir, found).stage != STAGE or saved is None):
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: not written by the RL stage (no '{EXTRA}' part); "
                            "start the RL stage from it with --init-from instead")
        self.init_from = saved["init_from"] if saved else init_from
        self.plans = check_config(cfg, self.world)
        # On resume the actor's weights come from the checkpoint; the source is read again
        # only for the frozen reference.
        need_source = self.init_from is not None and (not found or cfg.rl.uses_reference)
        initial = initial_state(self.init_from, cfg.model) if need_source else None
        self.engines = build_rl_engines(cfg.model, self.plans, cfg.rl, seed=cfg.train.seed,
                                        encoder_dim=cfg.rl.encoder_dim, initial=initial)
        rl = cfg.rl
        tasks = build_tasks(seed=rl.task_seed, train=rl.tasks_train, heldout=rl.tasks_heldout,
                            families=list(rl.task_families) if rl.task_families else None)
        self.tasks = [t for t in tasks if t.split == "train"]
        self.heldout = [t for t in tasks if t.split == "heldout"]     # evaluated every train.eval_every steps
        self.probed = probe_tasks(self.heldout, rl.probe_tasks) if rl.probe_tasks else []
        self.tokenizer = start.tokenizer
        self.pool = SandboxPool(workers=rl.judge_workers, policy=SandboxPolicy())
        self.rl_step = RLStep(self.engines, start.tokenizer, self.tasks, rl, seed=cfg.train.seed, pool=self.pool,
                              moe=cfg.moe)
        self.last: dict = {}
        self.steps_done = 0
        self.resumed = self._resume(found, saved) if found else LoopState()

    def summary(self) -> str:
        engines = [*self.engines.items(), *(["reference (frozen)"] if self.engines.reference is not None else [])]
        return (f"RL stage: world {self.world}, expert-parallel {self.plans['actor'].ep_size}, engines "
                f"{', '.join(engines)}, {len(self.tasks)} train tasks"
                + (f", resumed at step {self.resumed.step}" if self.resumed.step else "")
                + (f", weights from {self.init_from}" if self.init_from else ", random weights (--random-weights)"))

    def _resume(self, found: str, saved: dict) -> LoopState:
        loaded = checkpoint.load(self.engines.items(), self.ckpt_dir, found)
        state = loaded.client_state.get("koda") or {}
        check_model(state, self.cfg, self.ckpt_dir / found)
        self.rl_step.load_state_dict(saved["step_state"])
        if loaded.rank_state is None:
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: has no state for rank {self.rank} (saved by "
                            f"{state.get('world_size')} ranks); the RL stage resumes on the same world size")
        checkpoint.set_rng_state(loaded.rank_state["rng"])
        return LoopState.from_dict(state if "elapsed_s" in state else {**state, **saved})

    def save(self, state: LoopState) -> str:
        record = {"koda": {**state.state_dict(), "stage": STAGE, "world_size": self.world,
                           "model": self.cfg.model.to_dict(), "format": checkpoint.FORMAT,
                           "koda_version": __version__}}
        extra = {EXTRA: {"step": state.step, "elapsed_s": state.elapsed_s, "init_from": self.init_from,
                         "step_state": self.rl_step.state_dict(), "rl": self.cfg.to_dict()["rl"]}}
        meta = {"stage": STAGE, "ep_size": self.plans["actor"].ep_size, "optimizer": "deepspeed",
                "source": self.init_from}
        saved = checkpoint.save(self.engines.items(), self.ckpt_dir, state.step, record,
                                {"rng": checkpoint.rng_state()}, self.cfg.train.keep_checkpoints, extra, meta=meta)
        return f"saved checkpoint {self.ckpt_dir / saved.tag} ({saved.bytes / 1e6:,.1f} MB in {saved.seconds:.2f} s)"

    def train_step(self, step: int) -> StepOutcome:
        actor = self.engines.actor
        discarded_before = actor.skipped_steps
        self.last = self.rl_step.run(step)       # rank means: every rank sees the same values
        self.steps_done = step + 1
        bad = sorted(k for k, v in self.last.items() if not math.isfinite(v))
        return StepOutcome(nonfinite=", ".join(bad[:3]) or None, discarded=actor.skipped_steps > discarded_before)

    def step_metrics(self, steps: int, seconds: float) -> dict:
        if self.rank == 0 and self.rl_step.last_group:      # what the reward was given for: read it for hacks
            with self.rollouts.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": self.steps_done, "samples": self.rl_step.last_group}) + "\n")
        return {**self.last, "perf/step_s": seconds / steps, "train/lr": self.engines.actor.lr(),
                "train/grad_norm": self.engines.actor.grad_norm()}

    def evaluates(self) -> bool:
        return bool(self.heldout)

    def evaluate(self) -> dict:
        metrics = self.rl_step.heldout_ce(self.heldout)
        if self.probed:
            metrics |= heldout_probe(self.engines.actor, self.tokenizer, self.probed, self.rl_step.judge,
                                     max_new_tokens=self.cfg.rl.probe_max_new_tokens,
                                     max_len=self.cfg.model.max_seq_len, experts=self.cfg.rl.rollout_experts)
        return metrics

    def close(self) -> None:
        self.rl_step.close()
        self.pool.close()


def train(cfg: RunConfig, resume: bool = False, resume_tag: str | None = None, init_from: str | None = None,
          resume_older: bool = False, random_weights: bool = False) -> dict:
    """Run the RL stage on this rank (the process group is up); returns the last metrics."""
    start = open_run(cfg, resume, resume_tag, resume_older)
    if start.found is None:
        check_source(init_from, random_weights)
    stage = RLStage(cfg, start, init_from)
    return run_stage(stage, cfg, start.layout, stage.resumed, stage.plans["actor"].config, stage.summary())
