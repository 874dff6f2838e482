"""Masked means over [B, T] token grids: every RL term averages over generated tokens only."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """values: [B, T]; mask: [B, T] (bool or 0/1) or None -> scalar mean over masked entries.

    The denominator is clamped at 1 so an all-masked batch gives 0, not NaN.
    """
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def check_same_shape(**tensors: torch.Tensor | None) -> None:
    """Raise a one-line ValueError naming the first tensor whose shape differs from the first one's."""
    items = [(k, t) for k, t in tensors.items() if t is not None]
    name0, ref = items[0]
    for name, t in items[1:]:
        if t.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, {name0} has {tuple(ref.shape)}")
