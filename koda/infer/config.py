"""Decoding settings: one frozen dataclass, validated at construction.

Every field has the meaning it has on the ``koda generate`` command line, so the CLI only
copies flags into it. Values that would silently degrade (top_p 0, k 1 contrastive search,
temperature 0 with sampling) are refused with a one-line error naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from koda.errors import ConfigError

STRATEGIES = ("greedy", "sample", "contrastive")
CONTRASTIVE_SCORES = ("logprob", "prob")


@dataclass(frozen=True)
class GenerationConfig:
    strategy: str = "greedy"
    max_new_tokens: int = 128
    # sampling
    temperature: float = 1.0
    top_k: int = 0               # keep the k most likely tokens; 0 = no limit
    top_p: float = 1.0           # keep the smallest set with probability >= top_p; 1 = no limit
    seed: int = 0                # seeds one torch.Generator per prompt, never the global RNG
    # contrastive search (Su et al. 2022)
    alpha: float = 0.6           # weight of the degeneration penalty; 0 = greedy
    candidates: int = 4          # k: candidates scored per step, in one batched forward
    score: str = "logprob"       # model confidence term: log p (KODA's default) or p (the paper's)
    # execution
    use_cache: bool = True       # False recomputes the whole context each step (tests, benchmark)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 (use --strategy greedy for argmax), got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not isinstance(self.candidates, int) or self.candidates < 2:
            raise ConfigError(f"candidates (k) must be an integer >= 2 for contrastive search, got {self.candidates!r}")
        if self.score not in CONTRASTIVE_SCORES:
            raise ConfigError(f"score must be one of {', '.join(CONTRASTIVE_SCORES)}, got {self.score!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")

    def replace(self, **changes) -> GenerationConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
