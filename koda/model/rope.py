"""Rotary position embeddings (Su et al. 2021), "rotate half" convention.

The half-split convention (pairs are (i, i + hd/2), not interleaved) is the one Llama and
Mixtral checkpoints use, so converted weights need no permutation. The angles are computed
in fp32 on every call instead of being stored as buffers: DeepSpeed casts every floating
buffer to bf16 when bf16 is on, and bf16 angles lose whole positions beyond a few hundred.
"""

from __future__ import annotations

import torch


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [B, S] (int) -> (cos, sin), each [B, 1, S, head_dim] in fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
                               / head_dim)                                   # [hd/2]
    angles = positions.to(torch.float32)[..., None] * inv_freq              # [B, S, hd/2]
    angles = torch.cat((angles, angles), dim=-1)[:, None]                   # [B, 1, S, hd]
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, S, hd]; cos/sin: [B, 1, S, hd] -> [B, H, S, hd] in x's dtype."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)
