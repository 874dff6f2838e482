"""The critic's loss: squared error to the returns, with PPO's clipped variant.

Clipping keeps a value estimate from moving further than ``clip`` from the one that was
recorded with the rollout, taking the pessimistic (larger) of the two errors per token.
"""

from __future__ import annotations

import torch

from koda.objectives.masking import check_same_shape, masked_mean


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor | None = None, clip: float | None = 0.2) -> torch.Tensor:
    """values (current critic), old_values (rollout), returns, mask: [B, T] -> scalar.

    loss = 0.5 E[max((v - R)^2, (old + clamp(v - old, -clip, clip) - R)^2)];
    clip None: 0.5 E[(v - R)^2].
    """
    check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    returns, old_values = returns.detach(), old_values.detach()
    err = (values - returns) ** 2
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"value clip must be > 0 or None, got {clip}")
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)
