"""The actor's policy-gradient loss: PPO's clipped surrogate, plain A2C when the clip is off.

All inputs are per generated token, [B, T], with a mask marking real completion tokens
(prompt and padding are 0). Log-probs are of the sampled tokens; ``old_logprobs`` come
from the policy that generated the rollout, so the ratio is 1 on the first epoch and the
PPO and A2C gradients agree there; they differ once the same rollout is reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from koda.objectives.masking import check_same_shape, masked_mean


@dataclass(frozen=True)
class PolicyLossOut:
    loss: torch.Tensor            # scalar, to minimise
    clip_fraction: torch.Tensor   # scalar: share of tokens where the clip was active (0 for A2C)
    approx_kl: torch.Tensor       # scalar: E[(r - 1) - log r], Schulman's unbiased k3 estimate of KL(old||new)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor | None = None, clip: float | None = 0.2) -> PolicyLossOut:
    """logprobs, old_logprobs, advantages, mask: [B, T].

    clip = eps: loss = -E[min(r A, clip(r, 1-eps, 1+eps) A)] with r = exp(logprobs - old);
    clip = None: A2C, loss = -E[logprobs A]. Advantages are constants (detached here).
    """
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    adv = advantages.detach()
    log_ratio = logprobs - old_logprobs.detach()
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    if clip is None:
        zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
        return PolicyLossOut(-masked_mean(logprobs * adv, mask), zero, approx_kl)
    if not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped < unclipped).to(logprobs.dtype), mask)
    return PolicyLossOut(loss, clip_fraction, approx_kl)


def token_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """logits: [B, T, V] -> mean entropy (nats) of the next-token distributions over masked tokens.

    Logged (and optionally a bonus term); the softmax runs in fp32.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1)                                   # [B, T]
    return masked_mean(ent, mask)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from sampled tokens; [B, T] -> [B, T].

    ``k1`` = log pi - log ref (unbiased, can be negative: the classic reward-side penalty);
    ``k3`` = (ref/pi - 1) - log(ref/pi) (unbiased, always >= 0, lower variance: the loss-side term).
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k3":
        return log_ratio.exp() - 1 - log_ratio
    raise ValueError(f"kl kind must be 'k1' or 'k3', got {kind!r}")
