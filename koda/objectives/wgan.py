"""WGAN-GP terms (Gulrajani et al. 2017) for the encoder (critic D) and the actor (generator).

The encoder scores *embedded* sequences, so real and fake meet in one continuous space
[B, T, D]: a real sequence embeds its token ids, a generated one embeds its relaxed
(Gumbel-softmax) one-hot rows through the same embedding matrix. The gradient penalty is
taken on random interpolates of those two embeddings, which is where the 1-Lipschitz
constraint of the Kantorovich-Rubinstein dual has to hold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """real_scores: [B], fake_scores: [B'] -> -(E[D(real)] - E[D(fake)]), the term D minimises.

    Its negative is the Wasserstein estimate that gets logged.
    """
    return -(real_scores.mean() - fake_scores.mean())


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """fake_scores: [B] -> -E[D(fake)], the adversarial term the actor minimises."""
    return -fake_scores.mean()


def gradient_penalty(score_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, mask: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """E[(||grad_x D(x)||_2 - 1)^2] at x = eps real + (1 - eps) fake, eps ~ U(0, 1) per sample.

    score_fn: embedded sequences [B, T, D] (and mask) -> scores [B]; real, fake: [B, T, D]
    (fake is detached: the penalty trains D only); mask: [B, T] or None, passed to score_fn.
    The graph is kept (create_graph) so the penalty's own gradient reaches D's weights.
    Returns (penalty scalar, per-sample gradient norms [B], detached, for logging).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real embeddings {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    eps = torch.rand(real.shape[0], 1, 1, dtype=real.dtype, device=real.device, generator=generator)
    x = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = score_fn(x, mask) if mask is not None else score_fn(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)                                     # [B]
    return ((norms - 1) ** 2).mean(), norms.detach()
