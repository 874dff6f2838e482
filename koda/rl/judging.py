"""Judging rollouts on background threads while the rest is generated.

The rank's thread keeps decoding while the completions that already finished run in the
sandbox pool, whose worker processes do the waiting. ``koda.rl.step`` submits the samples
that end in a decode step as soon as they end (``lockstep_generate``'s ``on_finish``), so a
completion that stops early is judged while the longer ones are still sampled. Up to
`workers` batches are judged at once (one per sandbox worker); the judge threads only
dispatch to the pool and run the AST analyses, so the overlap is real where the pool has
cores the ranks do not use; on a machine whose cores the ranks already fill, the two compete
and less is hidden (``time/judge_wait`` says how much).

    judge = OverlappedJudge(weights, pool=pool, budget_s=2.0, workers=2)
    for batch in finished_batches:
        judge.submit(batch)            # returns at once
    rewards, timing = judge.collect()  # in submission order; blocks for what is left
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from koda.rl.rewards import Reward, RewardSample, RewardWeights, score


@dataclass(frozen=True)
class JudgeTiming:
    busy_s: float        # judge threads' working time, every batch's summed
    wait_s: float        # time the rank's thread blocked in collect()

    @property
    def hidden_fraction(self) -> float:
        """Share of the judging that ran while the rank was doing something else."""
        return 1.0 - min(self.wait_s, self.busy_s) / self.busy_s if self.busy_s > 0 else 1.0


class OverlappedJudge:
    """`workers` background threads; rewards come back in submission order (see the module docstring)."""

    def __init__(self, weights: RewardWeights, *, pool=None, policy=None, budget_s: float = 2.0, workers: int = 1):
        self.weights, self.pool, self.policy, self.budget_s = weights, pool, policy, budget_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="koda-judge")
        self._pending: list[Future] = []
        self._busy = 0.0
        self._lock = threading.Lock()

    def _score(self, samples: list[RewardSample]) -> list[Reward]:
        start = time.perf_counter()
        try:
            return score(samples, self.weights, pool=self.pool, policy=self.policy, budget_s=self.budget_s)
        finally:
            with self._lock:
                self._busy += time.perf_counter() - start

    def submit(self, samples: list[RewardSample]) -> None:
        self._pending.append(self._executor.submit(self._score, samples))

    def collect(self) -> tuple[list[Reward], JudgeTiming]:
        """Every submitted chunk's rewards, concatenated in order; re-raises a judge error."""
        start = time.perf_counter()
        try:
            rewards = [reward for future in self._pending for reward in future.result()]
        finally:
            self._pending = []
        timing = JudgeTiming(self._busy, time.perf_counter() - start)
        self._busy = 0.0
        return rewards, timing

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OverlappedJudge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
