"""Muon over ZeRO-3 + AutoEP ranks: the clipping norm from each rank's gradient partition.

Everything else is ``koda.optim.muon.Muon`` on the engine's ``GradientAccess``: a dense
matrix's ``get`` is the same full gradient on every rank (so every rank keeps the same
momentum and computes the same update, then keeps its partition of it), an expert tensor's
``get_experts`` holds this rank's experts only (their momentum stays with them, per rank).
What one process cannot do is the global gradient norm for clipping without gathering every
tensor: here each rank sums the squares of its own ZeRO-3 partitions (``get_local``, no
communication) and one all-reduce adds them. Dense tensors are partitioned over all ranks and
each expert over its expert-data-parallel group, so every element is counted exactly once.
The AdamW tensors' clipped gradients are written back partition by partition.

Cost: dense matrices' momentum is held whole on every rank and their Newton-Schulz run on
every rank (not split by owner as K-FAC's decompositions are).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from koda.optim.muon import Muon


class DataParallelMuon(Muon):
    def __init__(self, model, config, clip: float = 0.0, group=None):
        super().__init__(model, config, clip)
        self.group = group

    def _norm_sq(self, grads) -> float:
        local = torch.zeros((), dtype=torch.float64)
        for name in (*self.matrices, *self.others):
            local += grads.get_local(name).values.double().pow(2).sum()
        dist.all_reduce(local, group=self.group)
        return float(local)

    def _scale(self, grads, name: str, coef: float) -> None:
        grads.set_local(name, grads.get_local(name).values * coef)
