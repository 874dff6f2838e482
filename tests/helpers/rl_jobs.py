"""Rank jobs for the RL step test (run through tests.helpers.ranks.run_ranks)."""

from __future__ import annotations

import math

import torch


def _local_partitions(engine) -> list[torch.Tensor]:
    """This rank's ZeRO-3 shard of every parameter (the full parameter below stage 3)."""
    return [getattr(p, "ds_tensor", p).detach().clone() for p in engine.module.parameters()]


def _moved(engine, before: list[torch.Tensor]) -> float:
    """Collective: the largest change of any parameter shard on any rank."""
    local = max((a - b).abs().max().item() for a, b in zip(_local_partitions(engine), before, strict=True))
    out = torch.tensor([local], dtype=torch.float64)
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    return float(out)


def two_rl_steps(tokenizer: str, advantage: str = "gae", steps: int = 2, lvw: float = 0.1, kl_coef: float = 0.0,
                 kl_in: str = "reward", rollout_experts: str = "local") -> dict:
    """TINY actor (ZeRO-3 + AutoEP), critic and encoder; `steps` RL steps of 8 new tokens."""
    from koda.config.rl import RLConfig
    from koda.data.tokenizer import Tokenizer
    from koda.distributed import comm, ds_config
    from koda.rl.engines import build_rl_engines, rl_plans
    from koda.rl.step import RLStep
    from koda.sandbox import SandboxPolicy, SandboxPool
    from koda.tasks import build_tasks
    from tests.helpers.tiny import TINY

    rl = RLConfig(prompts_per_step=2, samples_per_prompt=2, max_new_tokens=8, advantage=advantage, n_critic=2,
                  lvw=lvw, judge_budget_s=0.5, kl_coef=kl_coef, kl_in=kl_in, rollout_experts=rollout_experts)
    actor_ds = ds_config.load("zero3_ep_smoke.json")
    actor_ds.pop("scheduler")         # WarmupCosineLR starts at lr 0: two steps would not move the actor
    plans = rl_plans(actor_ds, TINY, comm.world_size(), train_steps=10, rl=rl)
    engines = build_rl_engines(TINY, plans, rl, seed=3, encoder_dim=32)
    tasks = [t for t in build_tasks(seed=0, train=2, heldout=0) if t.split == "train"]
    before = {name: _local_partitions(e) for name, e in engines.items().items()}
    out: dict = {"rank": comm.rank(), "engines": sorted(engines.items()), "reference": engines.reference is not None}
    policy = SandboxPolicy(timeout_s=2.0, memory_mb=256, nproc=16)
    with SandboxPool(workers=1, policy=policy) as pool, RLStep(engines, Tokenizer(tokenizer), tasks, rl, seed=1,
                                                                 pool=pool) as step:
        out["prompts"] = [[t.task_id for t in step.prompts_of(s)] for s in range(steps)]
        out["metrics"] = [step.run(s) for s in range(steps)]
    out["moved"] = {name: _moved(e, before[name]) for name, e in engines.items().items()}
    out["finite"] = all(math.isfinite(v) for m in out["metrics"] for v in m.values())
    return out
