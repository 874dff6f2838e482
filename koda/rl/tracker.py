"""Running mean and variance of advantages (or rewards), identical on every rank.

Statistics are kept as Welford's (count, mean, M2) triple and merged with Chan et al.'s
pairwise formula, exact in one pass and stable where the sum-of-squares form cancels.
Each ``update`` first merges the batch's triple across ranks (``comm.all_reduce_moments``),
so every rank applies the same increment and normalises with the same numbers; the state
goes into checkpoints so a resumed run normalises exactly as the original would have.
"""

from __future__ import annotations

import torch

from koda.distributed import comm
from koda.errors import KodaError


def chan_merge(a: tuple[torch.Tensor, torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n_a, mean_a, M2_a) + (n_b, mean_b, M2_b) -> the triple of the union (float64)."""
    na, ma, m2a = (t.double() for t in a)
    nb, mb, m2b = (t.double() for t in b)
    n = na + nb
    if float(n) == 0:
        return n, ma, m2a
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + delta ** 2 * (na * nb / n)


def batch_moments(values: torch.Tensor, mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """values: [N, *S] (or [B, T] with mask [B, T]) -> (count [], mean [*S], M2 [*S]) in float64.

    With a mask only masked-in entries count and the statistic is a scalar (S = ()).
    """
    x = values.detach().double()
    if mask is not None:
        if mask.shape != values.shape:
            raise KodaError(f"tracker mask shape {tuple(mask.shape)} differs from values {tuple(values.shape)}")
        x = x[mask.bool()]
    n = torch.tensor(float(x.shape[0]), dtype=torch.float64)
    if x.shape[0] == 0:
        return n, torch.zeros(x.shape[1:], dtype=torch.float64), torch.zeros(x.shape[1:], dtype=torch.float64)
    mean = x.mean(dim=0)
    return n, mean, ((x - mean) ** 2).sum(dim=0)


class RunningMoments:
    """Mean/variance of everything seen so far, over all ranks. shape: the per-sample
    statistic's shape (() for scalar advantages)."""

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-8):
        self.eps = eps
        self.count = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.m2 = torch.zeros(shape, dtype=torch.float64)

    @property
    def var(self) -> torch.Tensor:
        """Population variance (M2 / n); 1 before any data, so normalising is a no-op then."""
        return self.m2 / self.count if self.count > 0 else torch.ones_like(self.m2)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()

    def update(self, values: torch.Tensor, mask: torch.Tensor | None = None, sync: bool = True) -> None:
        """Add a batch (see ``batch_moments``); sync: merge the batch over ranks first."""
        batch = batch_moments(values, mask)
        if batch[1].shape != self.mean.shape:
            raise KodaError(f"tracker holds shape {tuple(self.mean.shape)}, batch gives {tuple(batch[1].shape)}")
        if sync:
            batch = comm.all_reduce_moments(*batch)
        self.count, self.mean, self.m2 = chan_merge((self.count, self.mean, self.m2), batch)

    def normalize(self, values: torch.Tensor, shift: bool = True) -> torch.Tensor:
        """(values - mean) / sqrt(var + eps) in the values' dtype; shift=False keeps the mean
        (scaling rewards without moving their sign)."""
        centered = values.double() - self.mean if shift else values.double()
        return (centered / (self.var + self.eps).sqrt()).to(values.dtype)

    def state_dict(self) -> dict:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict) -> None:
        missing = {"count", "mean", "m2"} - set(state)
        if missing:
            raise KodaError(f"tracker state lacks {sorted(missing)[0]!r}")
        if tuple(state["mean"].shape) != tuple(self.mean.shape):
            raise KodaError(f"tracker state has shape {tuple(state['mean'].shape)}, expected {tuple(self.mean.shape)}")
        self.count = state["count"].double().reshape(())
        self.mean, self.m2 = state["mean"].double().clone(), state["m2"].double().clone()
