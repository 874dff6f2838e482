"""Judging rollouts on a background thread while the next chunk is generated.

The rank's thread keeps decoding (a collective: every rank runs the same forwards) while the
previous chunk's programs run in the sandbox pool, whose worker processes do the waiting. The
judge thread only dispatches to the pool and runs the AST analyses, so the overlap is real
where the pool has cores the ranks do not use; on a machine whose cores the ranks already
fill, the two compete and less is hidden (``time/judge_wait`` says how much).

    judge = OverlappedJudge(weights, pool=pool, budget_s=2.0)
    for chunk in chunks:
        samples = generate(chunk)
        judge.submit(samples)          # returns at once
    rewards, timing = judge.collect()  # in submission order; blocks for what is left
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from koda.rl.rewards import Reward, RewardSample, RewardWeights, score


@dataclass(frozen=True)
class JudgeTiming:
    busy_s: float        # judge thread's working time, all chunks together
    wait_s: float        # time the rank's thread blocked in collect()

    @property
    def hidden_fraction(self) -> float:
        """Share of the judging that ran while the rank was doing something else."""
        return 1.0 - min(self.wait_s, self.busy_s) / self.busy_s if self.busy_s > 0 else 1.0


class OverlappedJudge:
    """One background thread, chunks scored in the order submitted (see the module docstring)."""

    def __init__(self, weights: RewardWeights, *, pool=None, policy=None, budget_s: float = 2.0):
        self.weights, self.pool, self.policy, self.budget_s = weights, pool, policy, budget_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="koda-judge")
        self._pending: list[Future] = []
        self._busy = 0.0

    def _score(self, samples: list[RewardSample]) -> list[Reward]:
        start = time.perf_counter()
        try:
            return score(samples, self.weights, pool=self.pool, policy=self.policy, budget_s=self.budget_s)
        finally:
            self._busy += time.perf_counter() - start      # one worker thread: no race

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
