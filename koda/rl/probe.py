"""The held-out probe: what the policy solves now, measured while it trains.

Held-out CE says how well the actor predicts reference programs; it does not say whether its
own greedy programs pass. At every evaluation (``train.eval_every``) the probe completes
``rl.probe_tasks`` held-out prompts greedily with the actor's current weights, judges them in
the sandbox, and logs

    probe/pass_rate        share whose program passes every test
    probe/complexity_met   share that passes and meets the task's growth target (checked
                           whatever rl.rewards.complexity is, so a run without the
                           complexity reward still shows where its programs stand)
    probe/syntax_valid     share that parses

so a run's curve shows the pass rate rise or fall between the start and the end. The tasks
are spread evenly over the held-out list (which is ordered by family), the same ones at every
evaluation; ranks split them and meet once, in the sums.
"""

from __future__ import annotations

import dataclasses

import torch

from koda.data.tokenizer import EOS
from koda.distributed import comm
from koda.distributed.rollout import rollout_phase
from koda.infer.config import GenerationConfig
from koda.rl.rewards import Reward, RewardSample, score
from koda.rl.step import prompt_ids
from koda.tasks import Task

KEYS = ("probe/pass_rate", "probe/complexity_met", "probe/syntax_valid")


def probe_tasks(heldout: list[Task], n: int) -> list[Task]:
    """`n` tasks spread evenly over `heldout` (all of them when n >= its length)."""
    n = min(n, len(heldout))
    return [heldout[i * len(heldout) // n] for i in range(n)]


def tallies(rewards: list[Reward]) -> tuple[int, int, int]:
    """(passed, complexity met, parsed) among `rewards`."""
    passed = sum(r.components["tests"] == 1.0 and not r.failed for r in rewards)
    met = sum(r.components["complexity"] == 1.0 for r in rewards)
    parsed = sum(r.status != "syntax_error" for r in rewards)
    return passed, met, parsed


@torch.no_grad()
def heldout_probe(actor, tokenizer, tasks: list[Task], judge, *, max_new_tokens: int, max_len: int,
                  experts: str = "local") -> dict[str, float]:
    """Collective: greedy completions of `tasks` (rank r takes tasks[r::W]) judged with the
    pool and budget of `judge` (``koda.rl.judging.OverlappedJudge``); the shares of KEYS over
    all of `tasks`."""
    mine = tasks[comm.rank()::comm.world_size()]
    rows = [prompt_ids(tokenizer, t.prompt, max_len - max_new_tokens) for t in mine]
    cfg = GenerationConfig(strategy="greedy", max_new_tokens=max_new_tokens)
    with rollout_phase(actor, experts) as phase:          # every rank generates once, its rows or none
        rollout = phase.generate(rows, cfg, step=0, eos_id=EOS)
    samples = [RewardSample(t.program(tokenizer.decode(rollout.completion(j))), t.program(), t.tests(),
                            t.entry_point, t.target) for j, t in enumerate(mine)]
    weights = dataclasses.replace(judge.weights, complexity=1.0)       # growth checked for every passing program
    rewards = score(samples, weights, pool=judge.pool, policy=judge.policy, budget_s=judge.budget_s) if mine else []
    sums = comm.all_reduce_sum(torch.tensor(tallies(rewards), dtype=torch.float64))
    return {key: float(v) / len(tasks) for key, v in zip(KEYS, sums.tolist(), strict=True)}
