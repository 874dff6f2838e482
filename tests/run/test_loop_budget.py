"""koda.run.loop's time budget: a run stops at the first step boundary past train.time_budget_s
of training seconds (evaluations not counted), saves, and evaluates once more so the curve
ends where the run did. One process, no process group (comm sums are then the identity)."""

import time

from koda.config.run import LoggingConfig, ScheduleConfig
from koda.run.loop import LoopState, RunLoop, Stage, StepOutcome
from koda.run.metrics import MetricsLogger

STEP_S, EVAL_S = 0.02, 0.2


class Timed(Stage):
    """Each step takes STEP_S, each evaluation EVAL_S; records what the loop asked for."""

    def __init__(self):
        self.steps, self.evaluated, self.saved = 0, [], []

    def train_step(self, step: int) -> StepOutcome:
        time.sleep(STEP_S)
        self.steps += 1
        return StepOutcome()

    def step_metrics(self, steps: int, seconds: float) -> dict:
        return {"train/loss": 1.0}

    def evaluates(self) -> bool:
        return True

    def evaluate(self) -> dict:
        self.evaluated.append(self.steps)
        time.sleep(EVAL_S)
        return {"val/loss": 1.0}

    def save(self, state: LoopState) -> str:
        self.saved.append(state.step)
        return "saved"


def test_the_time_budget_stops_the_run_saves_and_evaluates_its_last_step(tmp_path):
    stage = Timed()
    schedule = ScheduleConfig(steps=10_000, log_every=5, eval_every=10, checkpoint_every=10_000, time_budget_s=0.5)
    metrics = MetricsLogger(tmp_path, LoggingConfig(wandb_mode="disabled", progress_bar=False), {}, 10_000, True)
    state = LoopState()
    RunLoop(stage, schedule, metrics, state).run()
    # 0.5 s of 0.02 s steps: ~25 steps (sleep overshoots, so fewer), never the 10,000 asked
    assert 10 <= stage.steps <= 26, stage.steps
    assert state.elapsed_s >= 0.5 and state.elapsed_s - 0.5 < 2 * STEP_S + 0.05, state.elapsed_s
    # evaluation time is not training time: with it counted, the run would stop by step ~10
    assert stage.steps > 12, stage.steps
    assert stage.saved == [stage.steps]                       # the stop saved a checkpoint
    assert stage.evaluated[0] == 0 and stage.evaluated[-1] == stage.steps   # the curve's last point
