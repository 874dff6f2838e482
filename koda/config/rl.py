"""The ``rl`` section of the run config: rollout sizes, advantages, losses, GAN, reward weights.

Every field is read by one objective or reward function; the hybrid loss is
``lce * CE + lrl * (policy + value_coef * value) + lvw * WGAN generator term``, and any of
the three weights may be zero (all three zero would train nothing and is refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from koda.errors import ConfigError, KodaError

ADVANTAGES = ("gae", "grpo", "rloo")
ROLLOUT_EXPERTS = ("local", "parallel")     # koda.distributed.rollout.EXPERTS
COMPONENTS = ("tests", "complexity", "syntax", "similarity", "spectral", "poincare")   # koda.rl.rewards


def _num(name: str, value, lo: float | None = None, hi: float | None = None, integer: bool = False) -> None:
    ok_type = (isinstance(value, int) if integer else isinstance(value, int | float)) and not isinstance(value, bool)
    kind = "an integer" if integer else "a number"
    if not ok_type or not math.isfinite(value):
        raise ConfigError(f"rl.{name} must be {kind}, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"rl.{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(f"rl.{name} must be <= {hi}, got {value}")


@dataclass(frozen=True)
class RewardWeights:
    tests: float = 1.0
    complexity: float = 0.5
    syntax: float = 0.5
    similarity: float = 0.1
    spectral: float = 0.1
    poincare: float = 0.1
    failure: float = -1.0    # the total (not a weight) of a sample that hangs or crashes

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"rl.rewards.{f.name} must be a finite number, got {value!r}")
            if f.name != "failure" and value < 0:
                raise ConfigError(f"rl.rewards.{f.name} must be >= 0, got {value}")

    def total(self, components: dict[str, float]) -> float:
        return sum(getattr(self, name) * components[name] for name in COMPONENTS)



@dataclass(frozen=True)
class RLConfig:
    prompts_per_step: int = 4        # prompts per rank per RL step
    samples_per_prompt: int = 4      # completions per prompt (the group of grpo / rloo)
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0                   # sampling filters (0 / 1.0: off); log-probs stay those of softmax(logits/T)
    top_p: float = 1.0
    rollout_chunks: int = 2          # generate in chunks; chunk k is judged while k+1 is generated
    rollout_experts: str = "local"   # local: every rank holds all experts while it samples (no collective per
                                     # token); parallel: AutoEP's all-to-all per token (koda.distributed.rollout)
    ppo_epochs: int = 1              # passes over one rollout; 1 makes PPO's ratio exactly 1
    advantage: str = "gae"           # gae (critic) | grpo | rloo (critic-free, per prompt group)
    gamma: float = 1.0
    lam: float = 0.95
    normalize_advantages: bool = True   # by the rank-merged running mean/var (koda.rl.tracker)
    clip: float | None = 0.2         # PPO ratio clip; null: A2C
    value_clip: float | None = 0.2
    value_coef: float = 0.5
    kl_coef: float = 0.05            # KL to the reference policy
    kl_in: str = "reward"            # reward (k1 per token, subtracted) | loss (k3 term)
    entropy_coef: float = 0.0        # entropy is always logged; a bonus only when > 0
    lce: float = 1.0
    lrl: float = 1.0
    lvw: float = 0.1
    gp_lambda: float = 10.0
    n_critic: int = 5                # encoder steps per actor step
    gumbel_tau: float = 1.0
    straight_through: bool = True
    judge_budget_s: float = 2.0      # verifier seconds per program
    judge_workers: int = 2           # sandbox processes per rank
    task_seed: int = 0               # the task set's seed and size: koda eval --task-seed / --train / --heldout
    tasks_train: int = 8
    tasks_heldout: int = 3
    task_families: tuple[str, ...] | None = None   # None: the default task set; else these families
                                                    # (koda.tasks.open_method's are built only when named)
    probe_tasks: int = 0             # held-out tasks completed greedily and judged at each evaluation
                                     # (train.eval_every): probe/pass_rate; 0: held-out CE only
    probe_max_new_tokens: int = 256  # the probe's token budget (the longest held-out reference is 228)
    critic_ds_config: str = "zero3_critic_smoke.json"
    encoder_ds_config: str = "zero3_encoder_smoke.json"
    encoder_dim: int = 128
    rewards: RewardWeights = field(default_factory=RewardWeights)

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "samples_per_prompt", "max_new_tokens", "ppo_epochs", "n_critic",
                     "rollout_chunks", "judge_workers", "tasks_train", "encoder_dim"):
            _num(name, getattr(self, name), lo=1, integer=True)
        for name in ("temperature", "gumbel_tau"):
            _num(name, getattr(self, name), lo=0)
            if getattr(self, name) == 0:
                raise ConfigError(f"rl.{name} must be > 0, got 0")
        for name in ("gamma", "lam"):
            _num(name, getattr(self, name), lo=0, hi=1)
        for name in ("value_coef", "kl_coef", "entropy_coef", "lce", "lrl", "lvw", "gp_lambda"):
            _num(name, getattr(self, name), lo=0)
        _num("judge_budget_s", self.judge_budget_s, lo=0.1, hi=60)
        _num("top_k", self.top_k, lo=0, integer=True)
        _num("top_p", self.top_p, lo=0, hi=1)
        if self.top_p == 0:
            raise ConfigError("rl.top_p must be in (0, 1], got 0")
        _num("task_seed", self.task_seed, lo=0, integer=True)
        _num("tasks_heldout", self.tasks_heldout, lo=0, integer=True)
        _num("probe_tasks", self.probe_tasks, lo=0, integer=True)
        if self.task_families is not None:
            from koda.tasks import family_names

            if isinstance(self.task_families, str) or not all(isinstance(f, str) for f in self.task_families):
                raise ConfigError(f"rl.task_families must be a list of family names, got {self.task_families!r}")
            try:
                object.__setattr__(self, "task_families", tuple(family_names(list(self.task_families))))
            except KodaError as e:
                raise ConfigError(f"rl.task_families: {e}") from None
        _num("probe_max_new_tokens", self.probe_max_new_tokens, lo=1, integer=True)
        if self.rollout_chunks > self.prompts_per_step:
            raise ConfigError(f"rl.rollout_chunks {self.rollout_chunks} exceeds rl.prompts_per_step "
                              f"{self.prompts_per_step} (a chunk holds whole prompt groups)")
        for name in ("critic_ds_config", "encoder_ds_config"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"rl.{name} must be a DeepSpeed config path or name")
        for name in ("clip", "value_clip"):
            if getattr(self, name) is not None:
                _num(name, getattr(self, name), lo=0)
                if getattr(self, name) == 0:
                    raise ConfigError(f"rl.{name} must be > 0 or null, got 0")
        if self.rollout_experts not in ROLLOUT_EXPERTS:
            raise ConfigError(f"rl.rollout_experts must be one of {', '.join(ROLLOUT_EXPERTS)}, "
                              f"got {self.rollout_experts!r}")
        if self.advantage not in ADVANTAGES:
            raise ConfigError(f"rl.advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
        if self.advantage != "gae" and self.samples_per_prompt < 2:
            raise ConfigError(f"rl.advantage {self.advantage} needs rl.samples_per_prompt >= 2, "
                              f"got {self.samples_per_prompt}")
        if self.kl_in not in ("reward", "loss"):
            raise ConfigError(f"rl.kl_in must be 'reward' or 'loss', got {self.kl_in!r}")
        if self.lce == self.lrl == self.lvw == 0:
            raise ConfigError("rl.lce, rl.lrl and rl.lvw are all 0: nothing would be trained")
        for name in ("normalize_advantages", "straight_through"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"rl.{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.rewards, dict):
            known = {f.name for f in fields(RewardWeights)}
            unknown = sorted(set(self.rewards) - known)
            if unknown:
                raise ConfigError(f"rl.rewards: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
            object.__setattr__(self, "rewards", RewardWeights(**self.rewards))
        elif not isinstance(self.rewards, RewardWeights):
            raise ConfigError(f"rl.rewards must be a mapping, got {type(self.rewards).__name__}")

    @property
    def uses_critic(self) -> bool:
        """The critic engine is needed for GAE only (and then only when lrl > 0)."""
        return self.advantage == "gae" and self.lrl > 0

    @property
    def uses_encoder(self) -> bool:
        return self.lvw > 0

    @property
    def uses_rollouts(self) -> bool:
        """CE alone (lrl = lvw = 0) trains on reference programs only: nothing is generated."""
        return self.lrl > 0 or self.lvw > 0

    @property
    def uses_reference(self) -> bool:
        """The frozen reference policy exists for the KL term only."""
        return self.kl_coef > 0 and self.lrl > 0
