"""The one training loop, whichever stage runs in it.

A stage (``koda.pretrain.stage.PretrainStage``, ``koda.rl.stage.RLStage``) supplies one
optimizer step, its metrics, an optional evaluation and its checkpoint; the loop owns
everything between steps, the same for every stage:

- the step boundary: after every step the ranks agree in ONE all-reduce on whether any rank
  received a stop signal (SIGTERM, SIGUSR1, SIGINT: ``koda.distributed.preemption``), whether
  the time budget is spent (``train.time_budget_s``, rank 0's clock decides for all) and
  whether any rank saw a non-finite value (``train.on_nonfinite``: stop with an error naming
  the step, or count a step whose update DeepSpeed discarded and go on);
- the cadence: metrics every ``train.log_every`` steps, evaluation every ``train.eval_every``,
  a checkpoint every ``train.checkpoint_every`` and at the end or on a stop;
- the console line and the closing message.

Every rank runs the same sequence of collectives: a stage's step, evaluation and save are
collectives (ZeRO-3 gathers, AutoEP all-to-all), so the loop never branches on one rank's data.
Time spent logging, evaluating and saving is not counted as training time.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from koda.config.run import ScheduleConfig
from koda.distributed import comm, preemption
from koda.errors import KodaError
from koda.run.metrics import MetricsLogger


@dataclass
class StepOutcome:
    """What the loop needs to know of one step on this rank."""

    nonfinite: str | None = None     # what was not finite here ("loss", "rl/ce"), None: all finite
    discarded: bool = False          # DeepSpeed dropped the update (its gradient norm was not finite)


@dataclass
class LoopState:
    """The loop's own resumable state; a stage saves it in its checkpoint record."""

    step: int = 0
    elapsed_s: float = 0.0           # training seconds so far (what time_budget_s counts)
    skipped_steps: int = 0           # non-finite steps discarded under on_nonfinite: skip

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed_s, "skipped_steps": self.skipped_steps}

    @classmethod
    def from_dict(cls, state: dict) -> LoopState:
        return cls(int(state["step"]), float(state.get("elapsed_s", 0.0)), int(state.get("skipped_steps", 0)))


class Stage(ABC):
    """One stage of training, as the loop drives it."""

    name: str = "stage"
    # (metric key, console label, format) for the console line, in order
    console: tuple[tuple[str, str, str], ...] = ()

    @abstractmethod
    def train_step(self, step: int) -> StepOutcome:
        """Collective: one optimizer step (the `step`-th, from 0)."""

    @abstractmethod
    def step_metrics(self, steps: int, seconds: float) -> dict[str, float]:
        """Collective: the metrics of the `steps` steps since the last call, which took
        `seconds` of training time; identical on every rank."""

    def evaluate(self) -> dict[str, float]:
        """Collective: held-out metrics; {} for a stage without them."""
        return {}

    def evaluates(self) -> bool:
        return False

    @abstractmethod
    def save(self, state: LoopState) -> str:
        """Collective: a checkpoint of the stage and the loop state; returns a line to print."""

    def close(self) -> None:  # noqa: B027 - optional: most stages hold nothing to release
        """Release what the stage holds (sandbox pools, threads); called once, also on errors."""


class RunLoop:
    def __init__(self, stage: Stage, schedule: ScheduleConfig, metrics: MetricsLogger,
                 state: LoopState | None = None, stop: preemption.StopRequest | None = None,
                 last_checkpoint=lambda: None):
        self.stage, self.schedule, self.metrics = stage, schedule, metrics
        self.state = state or LoopState()
        self.stop = stop or preemption.current()
        self.last_checkpoint = last_checkpoint     # () -> tag or None, named in a non-finite error

    # ------------------------------------------------------------- step boundary
    def boundary(self, outcome: StepOutcome) -> str | None:
        """Collective, after every step. Raises on a non-finite step that is not to be
        skipped; returns why to stop now (a signal's name or "time budget"), or None."""
        received = [float(self.stop.signal == sig) for sig in preemption.STOP_SIGNALS]
        budget = self.schedule.time_budget_s
        over = float(comm.rank() == 0 and budget is not None and self.state.elapsed_s >= budget)
        flags = comm.all_reduce_sum(torch.tensor([*received, over, float(outcome.nonfinite is not None)]))
        *counts, over_budget, nonfinite = (bool(v) for v in flags.tolist())
        if nonfinite or outcome.discarded:
            self._nonfinite(outcome)
        signal = next((sig.name for sig, seen in zip(preemption.STOP_SIGNALS, counts, strict=True) if seen), None)
        return signal or ("time budget" if over_budget else None)

    def _nonfinite(self, outcome: StepOutcome) -> None:
        policy, step = self.schedule.on_nonfinite, self.state.step
        what = outcome.nonfinite or ("gradient norm" if outcome.discarded else "values on another rank")
        if policy == "stop" or not outcome.discarded:
            applied = "" if outcome.discarded else "; the update was applied"
            raise KodaError(f"step {step}: non-finite {what}{applied}; stopped without saving it "
                            f"(train.on_nonfinite={policy}; last checkpoint: {self.last_checkpoint() or 'none'})")
        self.state.skipped_steps += 1
        self.metrics.print(f"step {step}: non-finite {what}, update discarded "
                           f"({self.state.skipped_steps} skipped so far; train.on_nonfinite=skip)")

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train to ``train.steps`` or a stop; returns the last logged metrics."""
        sched, state, last = self.schedule, self.state, {}
        window_steps, window_s = 0, 0.0
        try:
            if state.step == 0 and self.stage.evaluates():   # the untrained baseline a curve starts from
                last = self.stage.evaluate()
                self._log(0, last)
            while state.step < sched.steps:
                start = time.perf_counter()
                outcome = self.stage.train_step(state.step)
                seconds = time.perf_counter() - start
                state.step += 1
                state.elapsed_s += seconds
                window_steps, window_s = window_steps + 1, window_s + seconds
                stop = self.boundary(outcome)
                self.metrics.advance()
                end = state.step == sched.steps
                metrics = {}
                if state.step % sched.log_every == 0 or end or stop:
                    metrics = {**self.stage.step_metrics(window_steps, window_s),
                               "perf/elapsed_s": state.elapsed_s, "train/skipped_steps": state.skipped_steps}
                    window_steps, window_s = 0, 0.0
                # a time budget's stop is an end too: the curve gets its last point (a signal's is not)
                if self.stage.evaluates() and (state.step % sched.eval_every == 0 or end or stop == "time budget"):
                    metrics.update(self.stage.evaluate())
                if metrics:
                    self._log(state.step, metrics)
                    last = metrics
                if state.step % sched.checkpoint_every == 0 or end or stop:
                    self.metrics.print(self.stage.save(state))
                if stop:
                    resume = "" if stop == "time budget" else "; continue with --resume"
                    self.metrics.print(f"stopped at step {state.step}/{sched.steps} on {stop}: "
                                       f"checkpoint saved{resume}")
                    break
        finally:
            self.metrics.close()
            self.stage.close()
        return last

    def _log(self, step: int, metrics: dict) -> None:
        self.metrics.log(step, metrics)
        self.metrics.print(console_line(self.stage, step, self.schedule.steps, metrics))


def console_line(stage: Stage, step: int, total: int, metrics: dict) -> str:
    parts = [f"{'' if stage.name == 'pretrain' else stage.name + ' '}step {step}/{total}"]
    for key, label, fmt in stage.console:
        if metrics.get(key) is not None:
            parts.append(f"{label} {metrics[key]:{fmt}}")
    return "  ".join(parts)
