"""Mixture-of-Experts feed-forward: top-k router, fused SwiGLU experts, and the block.

AutoEP naming contract (DeepSpeed 0.19.8, ``deepspeed/module_inject/auto_ep*.py``): a module
matching ``layers\\.\\d+\\.mlp`` whose child ``gate`` is an ``nn.Linear(D, E, bias=False)``
router and whose child ``experts`` holds fused 3-D parameters ``gate_up_proj`` [E, 2F, D]
(gate rows first, then up rows) and ``down_proj`` [E, D, F]. DeepSpeed replaces such a block
with its ``AutoEPMoELayer`` and shards the experts across the expert-parallel group. The
routing here reproduces AutoEP's Mixtral preset exactly (softmax in fp32, top-k, renormalise
the k weights, weight the expert outputs after the experts run), so a model trained under
AutoEP and converted back computes the same function in this block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from koda.model.config import ModelConfig


def route(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: [T, E] -> (weights [T, k] fp32 summing to 1 per token, experts [T, k] long)."""
    probs = F.softmax(logits.float(), dim=-1)
    weights, experts = torch.topk(probs, k=top_k, dim=-1, sorted=False)
    return weights / (weights.sum(dim=-1, keepdim=True) + 1e-20), experts


class SwiGLUExperts(nn.Module):
    """E SwiGLU experts in two fused tensors: out_e(x) = (silu(x Wg_eᵀ) * x Wu_eᵀ) Wd_eᵀ."""

    def __init__(self, n_experts: int, d_model: int, ffn_hidden: int):
        super().__init__()
        self.n_experts, self.ffn_hidden = n_experts, ffn_hidden
        self.gate_up_proj = nn.Parameter(torch.empty(n_experts, 2 * ffn_hidden, d_model))  # [E, 2F, D]
        self.down_proj = nn.Parameter(torch.empty(n_experts, d_model, ffn_hidden))         # [E, D, F]

    def forward(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """x: [T, D]; weights, experts: [T, k] -> [T, D], the weighted sum of each token's k experts.

        Token copies are sorted by expert so each expert runs one dense matmul over a
        contiguous slice (the grouped-GEMM layout), then scattered back with index_add.
        """
        top_k = experts.shape[1]
        flat = experts.reshape(-1)                                   # [T*k]
        order = torch.argsort(flat, stable=True)                     # copies grouped by expert
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()
        token = order // top_k                                       # [T*k] source token of each copy
        routed = x.index_select(0, token)                            # [T*k, D]
        # unbind once: indexing [e] per expert would make backward build a full-size zero
        # gradient for every expert (SelectBackward), one unbind stacks them in one go.
        gate_up, down = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)
        outputs = []
        start = 0
        for e, n in enumerate(counts):
            if n:
                gate, up = (routed[start:start + n] @ gate_up[e].t()).chunk(2, dim=-1)
                outputs.append((F.silu(gate) * up) @ down[e].t())   # [n, D]
            start += n
        out = torch.cat(outputs) if outputs else routed[:0]
        scale = weights.reshape(-1).index_select(0, order)[:, None]  # [T*k, 1] fp32
        out = (out.float() * scale).to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token, out)


class MoEBlock(nn.Module):
    """Top-k routed SwiGLU experts; runs on its own or is replaced whole by DeepSpeed AutoEP.

    Load balancing is not computed here: KODA observes the router through a forward hook on
    ``gate`` (see ``koda.train.router_probe``), which works the same whether this block or
    AutoEP's replacement runs, since both call a ``gate`` Linear on the flattened tokens.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k = cfg.top_k
        self.gate = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = SwiGLUExperts(cfg.n_experts, cfg.d_model, cfg.ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, S, D] -> [B, S, D]."""
        flat = x.reshape(-1, x.shape[-1])                            # [T, D]
        weights, experts = route(self.gate(flat), self.top_k)
        return self.experts(flat, weights, experts).view_as(x)


class DenseMLP(nn.Module):
    """Dense SwiGLU feed-forward (Llama naming) for the layers that are not MoE."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, S, D] -> [B, S, D]."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
