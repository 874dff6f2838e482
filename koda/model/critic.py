"""The critic: a small dense transformer with a value head, V per token.

It reuses the actor's blocks (attention, RoPE, RMSNorm, SwiGLU) but every layer is dense:
the critic is a fraction of the actor's size and gains nothing from experts, and a dense
model keeps AutoEP's detector away from it. The shape comes from a ``ModelConfig``; its
MoE fields are ignored and ``dense_ffn_hidden`` sets the MLP width.
"""

from __future__ import annotations

import torch
from torch import nn

from koda.model.attention import Attention, build_attention_mask
from koda.model.config import ModelConfig
from koda.model.init import init_weights
from koda.model.moe import DenseMLP
from koda.model.norm import RMSNorm
from koda.model.rope import rope_angles


class CriticLayer(nn.Module):
    """Pre-norm residual block, like the actor's ``DecoderLayer`` with a dense MLP."""

    def __init__(self, cfg: ModelConfig, index: int = 0):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, index)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = DenseMLP(cfg.d_model, cfg.dense_ffn_hidden)

    def forward(self, x, cos, sin, mask=None):
        """x: [B, T, D] -> [B, T, D]."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


def _zero_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.zero_()
            module.bias.zero_()


class KodaCritic(nn.Module):
    """Token ids [B, T] -> values [B, T] fp32: V(state before token t+1), causal, so V at t
    sees tokens <= t only, as the return it predicts starts after t."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(CriticLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.value_head = nn.Linear(cfg.d_model, 1)
        init_weights(self, cfg)
        # A zero head predicts V = 0 at the start: advantages begin as the plain returns
        # instead of the noise of a random head. Through ``apply``: under ZeRO-3's partitioned
        # construction only ``apply`` sees the whole parameter (a direct ``zeros_`` would
        # write into this rank's empty placeholder and leave the random partition in place).
        self.value_head.apply(_zero_linear)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: [B, T]; attention_mask: [B, T] bool, True for real tokens (left padding
        allowed). Returns values [B, T] fp32; entries at padding are meaningless."""
        B, T = input_ids.shape
        mask = build_attention_mask(attention_mask, T, 0)
        if attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        else:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        cos, sin = rope_angles(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.value_head(self.norm(x)).squeeze(-1).float()
