"""Advantages for the policy loss: GAE from the critic's values, or critic-free group baselines.

GAE (Schulman et al. 2016) runs backwards over the T generated positions:
delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}, where V_{t+1} and
A_{t+1} are 0 past the last real token of a sequence. Masked (padding) positions are skipped:
they neither receive an advantage nor break the recursion, so right padding and gaps from a
left-padded batch both work. Returns = A + V are the critic's regression targets.

The group modes need no critic: every prompt is sampled G times and each sample's scalar
reward is compared with its siblings (GRPO: (r - mean) / (std + eps); RLOO: r minus the mean
of the other G-1), then broadcast to every token of the sample.
"""

from __future__ import annotations

import torch

from koda.objectives.masking import check_same_shape


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, values, mask: [B, T] (the terminal reward sits on the last real token).

    Returns (advantages [B, T], returns [B, T]), both 0 at masked positions, detached.
    """
    check_same_shape(rewards=rewards, values=values, mask=mask)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma {gamma} and lambda {lam} must lie in [0, 1]")
    m = mask.to(values.dtype)
    rewards, values = rewards.detach() * m, values.detach() * m
    B, T = values.shape
    adv = torch.zeros_like(values)
    next_value = torch.zeros(B, dtype=values.dtype, device=values.device)    # V of the next real token
    next_adv = torch.zeros_like(next_value)
    for t in range(T - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        real = m[:, t] > 0
        adv[:, t] = torch.where(real, a, torch.zeros_like(a))
        next_value = torch.where(real, values[:, t], next_value)
        next_adv = torch.where(real, a, next_adv)
    return adv, (adv + values) * m


def group_advantages(rewards: torch.Tensor, group_size: int, mode: str = "grpo",
                     eps: float = 1e-6) -> torch.Tensor:
    """rewards: [N] scalar per sample, N = prompts * group_size with a prompt's samples adjacent.

    mode ``grpo``: (r - group mean) / (group std (unbiased) + eps); ``rloo``: r - mean of the
    other samples of the group. Returns [N]; broadcast over tokens with ``adv[:, None] * mask``.
    """
    if rewards.dim() != 1:
        raise ValueError(f"group rewards must be [N], got shape {tuple(rewards.shape)}")
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"group_size {group_size} must be >= 2 and divide the {rewards.numel()} samples")
    r = rewards.detach().view(-1, group_size)
    if mode == "grpo":
        adv = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + eps)
    elif mode == "rloo":
        adv = r - (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    else:
        raise ValueError(f"group advantage mode must be 'grpo' or 'rloo', got {mode!r}")
    return adv.reshape(-1)


def token_rewards(scores: torch.Tensor, action_mask: torch.Tensor, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards for GAE from one scalar score per sequence.

    scores: [B]; action_mask: [B, T] (completion tokens); kl: [B, T] per-token KL estimate
    (``policy.kl_penalty(..., "k1")``) or None. The score lands on the last completion token
    of each row, and -kl_coef * kl on every completion token (the KL-in-reward form).
    Returns [B, T], 0 outside the completion; a row with no completion gets nothing.
    """
    check_same_shape(action_mask=action_mask, kl=kl)
    if scores.shape != action_mask.shape[:1]:
        raise ValueError(f"scores has shape {tuple(scores.shape)}, expected ({action_mask.shape[0]},)")
    m = action_mask.to(scores.dtype)
    out = torch.zeros_like(m)
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m > 0, positions, torch.full_like(positions, -1)).max(dim=1).values    # [B]
    rows = torch.nonzero(last >= 0).squeeze(1)
    out[rows, last[rows]] = scores.detach()[rows]
    if kl is not None and kl_coef:
        out = out - kl_coef * kl.detach() * m
    return out
