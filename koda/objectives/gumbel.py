"""Gumbel-softmax relaxed samples: how the actor's tokens reach the encoder with a gradient.

A sampled token id has no gradient; y = softmax((logits + g) / tau), g ~ Gumbel(0, 1), is a
differentiable point on the simplex whose argmax is distributed exactly like a categorical
sample (Jang et al. 2017; Maddison et al. 2017). With ``hard`` the forward value is the one-hot
of that argmax and the backward pass uses y's gradient (straight-through), so the encoder
sees the same discrete inputs it sees for real data.
"""

from __future__ import annotations

import torch


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """logits: [..., V] -> relaxed one-hot [..., V] (rows sum to 1), same dtype as logits.

    Our own, not ``F.gumbel_softmax``, so a generator can fix the noise (tests, replays).
    """
    if not tau > 0:
        raise ValueError(f"gumbel tau must be > 0, got {tau}")
    u = torch.rand(logits.shape, dtype=torch.float32, device=logits.device, generator=generator)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    soft = torch.softmax((logits.float() + g) / tau, dim=-1)
    if not hard:
        return soft.to(logits.dtype)
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return (one_hot - soft.detach() + soft).to(logits.dtype)
