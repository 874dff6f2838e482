"""Next-token cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """logits: [B, S, V] (any float dtype; the softmax runs in fp32); targets: [B, S] long.
    Returns the mean loss over non-ignored targets, a scalar fp32 tensor."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index)
