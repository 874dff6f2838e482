"""Causal grouped-query self-attention: projections and RoPE here, the kernel chosen once.

``model.attention`` picks the backend in ``Attention.__init__``: ``sdpa`` (default) is
``scaled_dot_product_attention``, which picks the fused kernel for the device (flash /
memory-efficient on GPU, a fused C++ kernel on CPU) and reads shared key/value heads
through ``enable_gqa`` without copies; ``flash`` is flash-attn (``koda.model.flash``);
``favor`` is Performer FAVOR+ (``koda.model.favor``); ``auto`` is flash where it can run,
else sdpa. The backend is named in the module's repr. The backends hold no parameters,
so every backend has the same state_dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from koda.model import flash
from koda.model.config import ModelConfig
from koda.model.favor import FavorCache, FavorCore
from koda.model.kv_cache import KVCache
from koda.model.rope import apply_rope


class SdpaCore(nn.Module):
    """q [B, H, S, d], k/v [B, Hkv, S, d] -> [B, H, S, d] by ``scaled_dot_product_attention``."""

    def forward(self, q, k, v, mask=None, cache=None, layer: int = 0):
        if cache is not None:
            k, v = cache.append(layer, k, v)                                            # [B, Hkv, T, hd]
        gqa = k.shape[1] != q.shape[1]
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def resolve_backend(name: str) -> str:
    """The backend `name` stands for in this process: ``auto`` becomes flash or sdpa;
    ``flash`` that cannot run raises a one-line ConfigError."""
    if name == "auto":
        return "flash" if flash.unavailable_reason() is None else "sdpa"
    if name == "flash":
        flash.require()
    return name


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.backend = resolve_backend(cfg.attention)
        if self.backend == "favor":
            self.core = FavorCore(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.favor_features,
                                  cfg.favor_redraw, cfg.favor_seed, layer)
        else:
            self.core = flash.FlashCore() if self.backend == "flash" else SdpaCore()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def extra_repr(self) -> str:
        return f"backend={self.backend}"

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: KVCache | FavorCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """x: [B, S, D]; cos/sin: [B, 1, S, hd]; mask: [B, 1, S, T] bool (True = attend) or None
        for plain causal attention over the S new tokens. Returns [B, S, D]."""
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)      # [B, H, S, hd]
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)   # [B, Hkv, S, hd]
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = self.core(q, k, v, mask, cache, layer)                                    # [B, H, S, hd]
        return self.o_proj(out.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim))


def build_attention_mask(padding: torch.Tensor | None, new_tokens: int, past: int) -> torch.Tensor | None:
    """Boolean mask [B, 1, S, T] for S new tokens after `past` cached ones (T = past + S).

    padding: [B, T] bool, True for real tokens (left padding for batched prompts), or None.
    Returns None when plain causal attention over the new tokens is exact (no padding, no
    past), so the fast ``is_causal`` path is taken.
    """
    if padding is None and (past == 0 or new_tokens == 1):
        return None
    total = past + new_tokens
    device = padding.device if padding is not None else None
    query_pos = torch.arange(past, total, device=device)[:, None]                     # [S, 1]
    key_pos = torch.arange(total, device=device)[None, :]                              # [1, T]
    mask = (key_pos <= query_pos)[None, None]                                          # [1, 1, S, T]
    if padding is not None:
        mask = mask & padding[:, None, None, :total].bool()
        # A fully padded query row would make softmax NaN; let it see itself (its output is ignored).
        mask = mask | (key_pos == query_pos)[None, None]
    return mask
