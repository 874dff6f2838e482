"""Muon over ZeRO-3 + AutoEP ranks.

Everything is ``koda.optim.muon.Muon`` on the engine's ``GradientAccess``: a dense matrix's
``get`` is the same full gradient on every rank (so every rank keeps the same momentum and
computes the same update, then keeps its partition of it), an expert tensor's
``get_experts`` holds this rank's experts only (their momentum stays with them, per rank).
What one process cannot do is the global gradient norm for clipping without gathering every
tensor: ``RawGradientClip(partitioned=True)`` sums each rank's own partitions and all-reduces.

Cost: dense matrices' momentum is held whole on every rank and their Newton-Schulz run on
every rank (not split by owner as K-FAC's decompositions are).
"""

from __future__ import annotations

from koda.optim.clipping import RawGradientClip
from koda.optim.muon import Muon


class DataParallelMuon(Muon):
    def __init__(self, model, config, clip: float = 0.0, group=None):
        super().__init__(model, config, clip)
        self.group = group
        self.clipping = RawGradientClip(self.clipping.names, clip, partitioned=True, group=group)
