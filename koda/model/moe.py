"""Mixture-of-Experts feed-forward: top-k router, fused SwiGLU experts, and the block.

AutoEP naming contract (DeepSpeed 0.19.8, ``deepspeed/module_inject/auto_ep*.py``): a module
matching ``layers\\.\\d+\\.mlp`` whose child ``gate`` is an ``nn.Linear(D, E, bias=False)``
router and whose child ``experts`` holds fused 3-D parameters ``gate_up_proj`` [E, 2F, D]
(gate rows first, then up rows) and ``down_proj`` [E, D, F]. DeepSpeed replaces such a block
with its ``AutoEPMoELayer`` and shards the experts across the expert-parallel group. The
routing here reproduces AutoEP's Mixtral preset exactly (softmax in fp32, top-k, renormalise
the k weights, weight the expert outputs after the experts run), so a model trained under
AutoEP and converted back computes the same function in this block.

``model.router`` picks the routing rule (docs/routers.md). Only ``topk`` is AutoEP's rule;
the others run in this block alone, so ``koda.distributed.ds_config`` refuses them with
expert parallelism on. Whatever the rule, the block records the expert counts of the routing
it actually took (``routed_counts``), which the load statistics read.
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


def route_switch(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Switch Transformer top-1 (Fedus et al. 2021): the chosen expert's output is scaled by
    its softmax probability, not renormalised to 1, so the gate gets a gradient through the
    weight. logits: [T, E] -> (weights [T, 1] fp32, experts [T, 1] long)."""
    probs = F.softmax(logits.float(), dim=-1)
    weights, experts = probs.max(dim=-1, keepdim=True)
    return weights, experts


HASH_MULTIPLIER = 2654435761   # Knuth's multiplicative hash: a prime near 2^32 / golden ratio


def hash_experts(token_ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Hash routing (Roller et al. 2021): a fixed function of the token id, nothing learned.

    expert = (((id * 2654435761) mod 2^32) >> 16) mod E. The high half of the 32-bit product
    is used because its low b bits depend only on the id's low b bits, which would make
    ``mod E`` a function of ``id mod E`` for a power-of-two E (here exactly ``id mod 4``).
    token_ids: [T] (any integer dtype) -> experts [T] long.
    """
    product = (token_ids.long() * HASH_MULTIPLIER) % (1 << 32)    # < 2^63 for ids < 2^31
    return (product >> 16) % n_experts


def route_hash(token_ids: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """token_ids: [T] -> (weights [T, 1] fp32 ones, experts [T, 1] long)."""
    experts = hash_experts(token_ids, n_experts)[:, None]
    return torch.ones(experts.shape, dtype=torch.float32, device=experts.device), experts


def route_gumbel(logits: torch.Tensor, top_k: int, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over logits + Gumbel(0, 1) noise while training, plain ``route`` otherwise.

    The perturbed top-k samples k experts without replacement in proportion to the softmax
    (the Gumbel-top-k trick), so rarely chosen experts still see tokens early on. The weights
    are the clean softmax probabilities of the sampled experts, renormalised as in ``route``.
    The noise comes from torch's global RNG (seeded per rank by the trainer).
    logits: [T, E] -> (weights [T, k] fp32, experts [T, k] long).
    """
    if not training:
        return route(logits, top_k)
    probs = F.softmax(logits.float(), dim=-1)
    uniform = torch.rand_like(probs).clamp_(min=1e-20)
    noisy = logits.float() - torch.log(-torch.log(uniform))
    experts = torch.topk(noisy, k=top_k, dim=-1, sorted=False).indices
    weights = probs.gather(-1, experts)
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
    """Routed SwiGLU experts; with the ``topk`` router DeepSpeed AutoEP may replace it whole.

    Load balancing is not computed here: KODA observes the router logits through a forward
    hook on ``gate`` and the routing taken through ``routed_counts`` (see
    ``koda.run.router_probe``), which works the same whether this block or AutoEP's
    replacement runs. The ``hash`` router has no ``gate``: it reads the token ids that
    ``KodaForCausalLM`` sets on the block (``token_ids``, [B, S]) before each forward.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k, self.router, self.n_experts = cfg.top_k, cfg.router, cfg.n_experts
        if cfg.router != "hash":
            self.gate = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = SwiGLUExperts(cfg.n_experts, cfg.d_model, cfg.ffn_hidden)
        self.token_ids: torch.Tensor | None = None        # [B, S], set by the model for hash routing
        self.routed_counts: torch.Tensor | None = None    # [E] long: assignments of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, S, D] -> [B, S, D]."""
        flat = x.reshape(-1, x.shape[-1])                            # [T, D]
        weights, experts = self.choose(flat)
        self.routed_counts = torch.bincount(experts.reshape(-1).detach(), minlength=self.n_experts)
        return self.experts(flat, weights, experts).view_as(x)

    def choose(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """flat: [T, D] -> (weights [T, k] fp32, experts [T, k] long) by ``model.router``."""
        if self.router == "hash":
            if self.token_ids is None or self.token_ids.numel() != flat.shape[0]:
                raise ValueError("hash routing needs the token ids of this forward (set by KodaForCausalLM)")
            return route_hash(self.token_ids.reshape(-1), self.n_experts)
        logits = self.gate(flat)                                     # [T, E]
        if self.router == "switch":
            return route_switch(logits)
        if self.router == "topk_gumbel":
            return route_gumbel(logits, self.top_k, self.training)
        return route(logits, self.top_k)


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
