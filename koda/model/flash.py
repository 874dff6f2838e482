"""FlashAttention through the ``flash-attn`` package (CUDA only).

Used only when asked for (``model.attention: flash``) or found (``auto``); a request it
cannot honour is an error, never a quiet switch to SDPA, so a run's attention kernel is
the one its config names.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from koda.errors import ConfigError, KodaError

HALF = (torch.float16, torch.bfloat16)


def unavailable_reason() -> str | None:
    """Why flash cannot run in this process, or None when it can."""
    if importlib.util.find_spec("flash_attn") is None:
        return "the flash-attn package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        import flash_attn  # noqa: F401
    except Exception as err:  # a broken build (ABI mismatch) fails at import, not at find_spec
        return f"flash_attn does not import ({type(err).__name__})"
    return None


def require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise ConfigError(f"model.attention flash: {reason}; use sdpa or auto")


class FlashCore(nn.Module):
    """q [B, H, S, d], k/v [B, Hkv, S, d] -> [B, H, S, d]; flash-attn reads the grouped kv heads
    itself and aligns the causal mask bottom-right, so a cache continuation is causal too."""

    def forward(self, q, k, v, mask=None, cache=None, layer: int = 0):
        from flash_attn import flash_attn_func

        if q.device.type != "cuda":
            raise KodaError(f"model.attention flash runs on CUDA only; the model is on {q.device.type}")
        if q.dtype not in HALF:
            raise KodaError(f"model.attention flash needs bfloat16 or float16 activations, got {q.dtype}")
        if mask is not None:
            raise KodaError("model.attention flash takes no [B, 1, S, T] mask (padded batches, contrastive "
                            "search): use sdpa")
        if cache is not None:
            k, v = cache.append(layer, k, v)                                        # [B, Hkv, T, d]
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
        return out.transpose(1, 2)                                                  # [B, H, S, d]
