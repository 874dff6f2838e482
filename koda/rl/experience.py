"""One rollout batch as a typed record: what the trainer needs between generation and update.

B sequences of T tokens each (prompt + completion, padded). Per-token fields are aligned
with ``sequences``: entry t scores token t (its log-prob given tokens < t, the value of the
state before it), so ``action_mask`` marks the completion tokens the losses average over
and is 0 on the prompt and on padding. The record checks its shapes once, at construction,
so a mismatch names the field instead of surfacing as a broadcast error in a loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from koda.errors import KodaError


@dataclass
class Experience:
    sequences: torch.Tensor                     # [B, T] long: prompt + completion token ids
    attention_mask: torch.Tensor                # [B, T] bool: real tokens (prompt and completion)
    action_mask: torch.Tensor                   # [B, T] bool: completion tokens (what the policy chose)
    old_logprobs: torch.Tensor                  # [B, T] float: log pi_old(token t | < t) at generation
    ref_logprobs: torch.Tensor | None = None    # [B, T] float: the frozen reference's, for the KL term
    values: torch.Tensor | None = None          # [B, T] float: critic's V per token (None: critic-free)
    rewards: torch.Tensor | None = None         # [B, T] float: per-token rewards (terminal one on the last token)
    advantages: torch.Tensor | None = None      # [B, T] float
    returns: torch.Tensor | None = None         # [B, T] float: advantages + values, the critic's targets
    group: torch.Tensor | None = None           # [B] long: prompt index, for group-normalised advantages

    def __post_init__(self) -> None:
        if self.sequences.dim() != 2:
            raise KodaError(f"experience.sequences must be [B, T], got shape {tuple(self.sequences.shape)}")
        if self.sequences.dtype != torch.long:
            raise KodaError(f"experience.sequences must be long token ids, got {self.sequences.dtype}")
        shape = tuple(self.sequences.shape)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "sequences":
                continue
            want = shape[:1] if f.name == "group" else shape
            if tuple(value.shape) != want:
                raise KodaError(f"experience.{f.name} has shape {tuple(value.shape)}, expected {want}")
            if f.name in ("attention_mask", "action_mask") and value.dtype != torch.bool:
                raise KodaError(f"experience.{f.name} must be bool, got {value.dtype}")
            if f.name not in ("attention_mask", "action_mask", "group") and not value.is_floating_point():
                raise KodaError(f"experience.{f.name} must be a float tensor, got {value.dtype}")
        if bool((self.action_mask & ~self.attention_mask).any()):
            raise KodaError("experience.action_mask marks tokens that attention_mask says are padding")

    @property
    def batch_size(self) -> int:
        return int(self.sequences.shape[0])

    def to(self, device: torch.device | str) -> Experience:
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device)
                                            for f in dataclasses.fields(self) if getattr(self, f.name) is not None})

    def select(self, index: torch.Tensor) -> Experience:
        """Rows ``index`` ([b] long) of every field: one micro-batch of the PPO epoch."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[index]
                                            for f in dataclasses.fields(self) if getattr(self, f.name) is not None})
