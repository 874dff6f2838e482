"""Tucker decomposition of one 3-D expert tensor: ranks, decomposition, reconstruction, sizes.

A tensor W [n0, n1, n2] at ranks (r0, r1, r2) is stored as a core G [r0, r1, r2] and one
factor per mode U_i [n_i, r_i], with W ≈ G ×0 U0 ×1 U1 ×2 U2, i.e.
W_hat[a, b, c] = Σ G[p, q, s] U0[a, p] U1[b, q] U2[c, s]. For KODA's expert tensors mode 0 is
the expert axis, so U0 mixes experts and r0 < E merges them into fewer basis experts.

The decomposition is tensorly's HOOI started from the truncated HOSVD (``init="svd"``): no
random start, so the same tensor and ranks give the same factors on the same machine. It
runs in float64 on tensorly's PyTorch backend (the tensors are small next to a forward pass,
and the full-rank round trip then loses nothing measurable in the stored dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorly as tl
import torch
from tensorly.decomposition import tucker

from koda.analysis.spectra import one_thread
from koda.errors import KodaError

Ranks = tuple[int, int, int]
ITERATIONS = 20     # HOOI sweeps: past the HOSVD start the error falls little after the first few


@dataclass(frozen=True)
class TuckerFactors:
    core: torch.Tensor              # [r0, r1, r2]
    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # U_i [n_i, r_i]

    @property
    def ranks(self) -> Ranks:
        return tuple(self.core.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the core and the factors as stored (their own dtype)."""
        return sum(t.numel() * t.element_size() for t in (self.core, *self.factors))

    def to(self, dtype: torch.dtype) -> TuckerFactors:
        return TuckerFactors(self.core.to(dtype), tuple(u.to(dtype) for u in self.factors))


def compressed_numel(shape: tuple[int, ...], ranks: Ranks) -> int:
    """Numbers stored at `ranks`: the core plus the three factors."""
    return math.prod(ranks) + sum(n * r for n, r in zip(shape, ranks, strict=True))


def check_ranks(shape: tuple[int, ...], ranks: tuple[int, ...], where: str) -> Ranks:
    """One-line KodaError unless ranks fit the tensor: one per mode, 1 <= r_i <= n_i, and
    r_i <= the product of the other two ranks (a larger r_i has no more directions to take:
    HOOI's mode-i unfolding of the projected tensor has only that many columns)."""
    if len(shape) != 3:
        raise KodaError(f"{where}: Tucker compression needs a 3-D tensor, got shape {tuple(shape)}")
    if len(ranks) != 3:
        raise KodaError(f"{where}: {len(ranks)} ranks given, the tensor {tuple(shape)} has 3 modes")
    for mode, (n, r) in enumerate(zip(shape, ranks, strict=True)):
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise KodaError(f"{where}: rank {r!r} for mode {mode} must be a positive integer")
        if r > n:
            raise KodaError(f"{where}: rank {r} for mode {mode} exceeds the mode size {n} of shape {tuple(shape)}")
    for mode in range(3):
        others = math.prod(ranks) // ranks[mode]
        if ranks[mode] > others:
            raise KodaError(f"{where}: rank {ranks[mode]} for mode {mode} exceeds the product {others} "
                            f"of the other two ranks {tuple(ranks)}")
    return tuple(ranks)


def ranks_for_ratio(shape: tuple[int, ...], ratio: float, where: str) -> Ranks:
    """The largest ranks whose core + factors hold at most ratio × W's numbers.

    The expert mode keeps its full rank (E is small and U0 costs only E² numbers, while
    merging experts changes what the router selects); modes 1 and 2 shrink by the same
    fraction of their sizes. With few experts the factors U1, U2 cost about as much as
    W itself, so even ratio 1.0 is lossy; see docs/compress.md.
    """
    if not ratio > 0:
        raise KodaError(f"--ratio {ratio!r} must be > 0")
    n0, n1, n2 = shape
    budget = ratio * math.prod(shape)
    smallest = None
    for r1 in range(n1, 0, -1):
        r2 = max(1, min(n2, round(r1 * n2 / n1)))
        ranks = (n0, min(r1, n0 * r2), min(r2, n0 * r1))
        if ranks[1] * ranks[2] < n0:       # the expert mode would exceed the other two ranks
            continue
        smallest = ranks
        if compressed_numel(shape, ranks) <= budget:
            return ranks
    need = f"{compressed_numel(shape, smallest) / math.prod(shape):.3f}" if smallest else "more"
    raise KodaError(f"{where}: no ranks fit ratio {ratio} (the smallest with a full expert mode, "
                    f"{smallest}, need {need} of the tensor; pass --ranks to shrink the expert mode)")


def decompose(weight: torch.Tensor, ranks: Ranks, iterations: int = ITERATIONS) -> TuckerFactors:
    """weight: [n0, n1, n2] -> float64 core [r0, r1, r2] and factors U_i [n_i, r_i].

    At most `iterations` HOOI sweeps after the HOSVD start (each sweep is three SVDs);
    tensorly stops earlier once the error changes by less than 1e-4 between sweeps.
    """
    with one_thread(), tl.backend_context("pytorch"):  # small SVDs: threads only spin
        core, factors = tucker(weight.detach().to(torch.float64).cpu(), rank=list(ranks), n_iter_max=iterations,
                               init="svd", svd="truncated_svd", tol=1e-4, random_state=0)
    return TuckerFactors(core.contiguous(), tuple(u.contiguous() for u in factors))




def reconstruct(parts: TuckerFactors) -> torch.Tensor:
    """The dense [n0, n1, n2] tensor, computed in float64 from the parts as they are."""
    u0, u1, u2 = (u.to(torch.float64) for u in parts.factors)
    return torch.einsum("pqs,ap,bq,cs->abc", parts.core.to(torch.float64), u0, u1, u2)


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """||W - W_hat||_F / ||W||_F, in float64."""
    w = weight.to(torch.float64)
    return float(torch.linalg.vector_norm(w - approx.to(torch.float64)) / torch.linalg.vector_norm(w))
