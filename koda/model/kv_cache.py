"""Pre-allocated key/value cache for incremental decoding.

One cache holds every layer's keys and values for a batch, so a decode step appends in
place instead of concatenating (which would copy the whole history each token).
"""

from __future__ import annotations

import torch


class KVCache:
    """keys/values: per layer [B, n_kv_heads, capacity, head_dim]; `length` tokens are valid."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (batch, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.capacity = capacity
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: [B, n_kv, S_new, hd] -> all keys/values so far, [B, n_kv, length + S_new, hd].

        `length` advances only through `advance`, once per forward, after every layer appended.
        """
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.capacity}")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` ([B'] long), e.g. to expand or select candidates."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
