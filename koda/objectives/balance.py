"""Load-balancing terms for top-k routers, from the router's logits.

DeepSpeed AutoEP (0.19.8) has no auxiliary loss of its own, so these are what keep the
experts evenly used (``koda.run.router_probe`` feeds them the captured logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def switch_balance_loss(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Switch-Transformer auxiliary loss (Fedus et al. 2021, eq. 4) generalised to top-k.

    logits: [T, E]. With f_e the fraction of the T·k routing assignments that went to
    expert e (not differentiable) and P_e the mean router probability of e (differentiable),
    the loss is E · Σ_e f_e P_e: 1.0 for perfectly uniform routing, up to E when one expert
    takes everything. Returns (loss scalar fp32, assignment counts [E] long).
    """
    num_experts = logits.shape[-1]
    chosen = torch.topk(F.softmax(logits.float(), dim=-1), k=top_k, dim=-1).indices   # [T, k]
    counts = torch.bincount(chosen.reshape(-1), minlength=num_experts)    # [E]
    return balance_loss_from_counts(logits, counts), counts


def balance_loss_from_counts(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The same loss with f_e from the assignments a router actually made.

    logits: [T, E]; counts: [E], the tokens each expert received from these T tokens (T·k
    in all). A router that does not pick the plain top-k of the logits (switch's top-1,
    Gumbel-perturbed top-k) is balanced on what it did. Returns a scalar fp32.
    """
    probs = F.softmax(logits.float(), dim=-1)                             # [T, E]
    fraction = counts.float() / counts.sum().clamp_min(1)
    return logits.shape[-1] * torch.dot(fraction, probs.mean(dim=0))


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss (Zoph et al. 2022): mean of logsumexp(logits)² over tokens.
    logits: [T, E] -> scalar fp32."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
