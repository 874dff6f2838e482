"""The encoder: embeds a token sequence and scores it; the WGAN discriminator.

Input is token ids [B, T] (reference solutions) or relaxed one-hot rows [B, T, V] (the
actor's Gumbel-softmax samples); both become embeddings through the same matrix (ids by
lookup, soft rows by ``probs @ E``) so real and fake meet in one space, where the gradient
penalty is taken. Layers: a 1-D convolution over positions (local token patterns), one
self-attention layer (long-range structure), a masked mean over positions and a linear
score. No batch normalisation: WGAN-GP's penalty is per sample, and batch statistics
would couple the samples it treats separately. Attention is written out as matmuls, not
``scaled_dot_product_attention``: the penalty differentiates the gradient (double
backward), which the fused CPU and flash kernels do not implement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from koda.errors import ConfigError


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 4096      # must equal the actor's: soft samples are [B, T, V_actor]
    d_model: int = 128
    kernel_size: int = 5        # odd, so padding keeps T
    n_heads: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "kernel_size", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"encoder.{name} must be a positive integer, got {value!r}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"encoder.kernel_size must be odd, got {self.kernel_size}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"encoder.n_heads {self.n_heads} does not divide encoder.d_model {self.d_model}")


class KodaEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.conv = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.score_head = nn.Linear(cfg.d_model, 1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: ids [B, T] long, or soft one-hot [B, T, V] float -> embeddings [B, T, D]."""
        if tokens.dim() == 2 and not tokens.is_floating_point():
            return self.embed_tokens(tokens)
        if tokens.dim() == 3 and tokens.shape[-1] == self.cfg.vocab_size:
            return tokens.to(self.embed_tokens.weight.dtype) @ self.embed_tokens.weight
        raise ValueError(f"encoder input must be ids [B, T] or one-hot [B, T, {self.cfg.vocab_size}], "
                         f"got {tuple(tokens.shape)} {tokens.dtype}")

    def score_embedded(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, D] embeddings; mask: [B, T] bool (True = real token) -> scores [B]."""
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)               # the convolution must not see padding
        h = F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))               # [B, T, D]
        h = h + self.attend(self.norm(h), mask)
        if mask is None:
            pooled = h.mean(dim=1)
        else:
            m = mask[..., None].to(h.dtype)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)           # [B, D]
        return self.score_head(pooled).squeeze(-1)

    def attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Bidirectional self-attention; x: [B, T, D], mask: [B, T] bool -> [B, T, D]."""
        B, T, D = x.shape
        H = self.cfg.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)    # each [B, H, T, hd]
        scores = q @ k.transpose(-1, -2) / (D // H) ** 0.5                       # [B, H, T, T]
        if mask is not None:
            mask = mask.bool() | ~mask.bool().any(dim=-1, keepdim=True)         # an empty row attends to all
            scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v                                  # [B, H, T, hd]
        return self.out(out.transpose(1, 2).reshape(B, T, D))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: ids [B, T] or soft one-hot [B, T, V]; mask: [B, T] bool -> scores [B]."""
        return self.score_embedded(self.embed(tokens), mask)
