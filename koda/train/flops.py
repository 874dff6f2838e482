"""Model FLOPs per token, and the measured matmul peak that MFU is taken against."""

from __future__ import annotations

import time

import torch

from koda.model.config import ModelConfig


def active_matmul_params(cfg: ModelConfig) -> int:
    """Parameters one token multiplies through (embedding lookups excluded, top-k experts only)."""
    d, hd = cfg.d_model, cfg.head_dim
    attention = d * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    moe = cfg.n_experts * d + cfg.top_k * 3 * d * cfg.ffn_hidden
    dense = 3 * d * cfg.dense_ffn_hidden
    ffn = sum(moe if cfg.is_moe_layer(i) else dense for i in range(cfg.n_layers))
    return cfg.n_layers * attention + ffn + d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """6·N_active for the matmuls (forward 2, backward 4) plus 12·L·S·D for the attention
    scores and weighted values (PaLM, Chowdhery et al. 2022, appendix B; no causal discount)."""
    return 6.0 * active_matmul_params(cfg) + 12.0 * cfg.n_layers * seq_len * cfg.d_model


def measure_matmul_peak(dtype: torch.dtype, device: str | torch.device = "cpu", size: int = 2048,
                        seconds: float = 1.0) -> float:
    """Sustained FLOP/s of a square matmul in `dtype` on `device` (all threads torch uses)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        sync()
    return 2.0 * size**3 * runs / (time.perf_counter() - start)
