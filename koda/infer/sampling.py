"""Ancestral sampling: temperature, then top-k, then top-p (nucleus), then one draw per row.

The order matters: top-p is applied to the distribution that top-k and the temperature have
already shaped, so ``top_p`` means a fraction of the probability actually sampled from.
Each prompt draws from its own ``torch.Generator`` seeded from (seed, prompt index): a
prompt's draws do not depend on when the other prompts of its batch finish (finished rows
leave the batch), and nothing touches the global RNG, so sampling cannot disturb, or be
disturbed by, a training loop in the same process.

The kept set is always a prefix of the tokens sorted by probability, so the work is done on
that sorted prefix: with top-k only k entries are sorted and summed, and a draw is one
uniform number per row looked up in the cumulative distribution (inverse CDF), not one
exponential per vocabulary entry as ``torch.multinomial`` would draw.
"""

from __future__ import annotations

import torch

# Knuth's multiplicative constant spreads (seed, row) pairs over the 63-bit seed space so that
# seed s row 1 and seed s+1 row 0 do not collide.
_ROW_STRIDE = 0x9E3779B97F4A7C15


def row_seed(seed: int, row: int) -> int:
    """The generator seed of prompt `row` under the user's `seed` (part of the reproducibility contract)."""
    return (seed * _ROW_STRIDE + row) % (1 << 63)


def row_generators(seed: int, rows: int, device: torch.device | str) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(row_seed(seed, r)) for r in range(rows)]


def kept_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                      top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: [B, V] -> (probs [B, n] fp32, ids [B, n] long), sorted by falling probability,
    n = top_k (or V), zero probability outside the kept set (top_k 0 / top_p 1 = off).

    top-p keeps a token when the tokens strictly more likely than it hold less than top_p of
    the mass, so the most likely token always survives and the kept set is the smallest
    prefix whose mass reaches top_p.
    """
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        values, ids = torch.topk(logits, top_k, dim=-1)                     # sorted, [B, k]
    else:
        values, ids = torch.sort(logits, dim=-1, descending=True)           # [B, V]
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        mass_before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs, ids


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                     top_p: float = 1.0) -> torch.Tensor:
    """logits: [B, V] -> probabilities [B, V] (fp32) of the distribution `sample` draws from."""
    probs, ids = kept_distribution(logits, temperature, top_k, top_p)
    return torch.zeros_like(logits, dtype=torch.float32).scatter_(-1, ids, probs)


def sample(probs: torch.Tensor, ids: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """probs, ids: [B, n] from `kept_distribution`; generators: one per row -> token ids [B] (long).

    Inverse CDF: the first sorted entry whose cumulative mass exceeds u * total, u ~ U[0, 1)
    from the row's generator. The index is clamped to the last kept entry, so rounding at
    the top of the CDF can never select a token outside the kept set.
    """
    if len(generators) != probs.shape[0]:
        raise ValueError(f"{len(generators)} generators for {probs.shape[0]} rows")
    u = torch.cat([torch.rand(1, generator=g, device=probs.device, dtype=torch.float64) for g in generators])
    cdf = torch.cumsum(probs.double(), dim=-1)                                     # [B, n]
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)          # [B, 1]
    last_kept = (probs > 0).sum(dim=-1, keepdim=True) - 1
    return ids.gather(1, torch.minimum(pick, last_kept)).squeeze(1)
