"""DeepSpeed's gradient clipping, applied to the raw gradients inside a gradient transform.

DeepSpeed clips after the engine's gradient transforms, so it would clip what a transform
wrote: Muon's orthogonalised updates, or K-FAC's layer steps rescaled to one RMS
(``update_rms``), whose norm is fixed by construction. A transform that rewrites gradients
that way takes the clipping over (``koda.pretrain.optimizer.ClientOptimizer.plan`` sets
DeepSpeed's ``gradient_clipping`` to 0) and scales the raw gradients first, by DeepSpeed's
rule g / ((|g| + 1e-6) / clip) when that shrinks them; the norm it measured is the one logged
as ``train/grad_norm``.

One process (``ParamGrads``): the norm over the parameters' whole gradients. ZeRO-3
(``partitioned``, the engine's ``GradientAccess``): each rank sums the squares of its own
partitions (dense tensors are split over all ranks, each expert over its expert-data-parallel
group, so every element counts once) and one all-reduce adds them.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class RawGradientClip:
    """Clipping of the gradients of `names` (every trainable parameter) at norm `clip` (0: off)."""

    def __init__(self, names: list[str], clip: float = 0.0, partitioned: bool = False, group=None):
        self.names, self.clip, self.partitioned, self.group = list(names), float(clip), partitioned, group
        self.last_norm = float("nan")            # the last measured raw norm, before clipping

    def coefficient(self, grads) -> float:
        """Measure the raw norm (kept in ``last_norm``) and return the factor clipping applies (<= 1)."""
        self.last_norm = math.sqrt(self._norm_sq(grads))
        ratio = (self.last_norm + 1e-6) / self.clip if self.clip > 0 else 0.0
        return 1.0 / ratio if ratio > 1 else 1.0

    def scale(self, grads, names: list[str], coef: float) -> None:
        if coef == 1.0:
            return
        for name in names:
            if self.partitioned:
                grads.set_local(name, grads.get_local(name).values * coef)
            else:
                grads.set(name, grads.get(name) * coef)

    def _norm_sq(self, grads) -> float:
        if not self.partitioned:
            return sum(float(grads.get(n).float().pow(2).sum()) for n in self.names)
        local = torch.zeros((), dtype=torch.float64)
        for name in self.names:
            local += grads.get_local(name).values.double().pow(2).sum()
        dist.all_reduce(local, group=self.group)
        return float(local)
