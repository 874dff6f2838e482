"""K-FAC over data-parallel ranks: factor statistics summed over the group, each unit's
decomposition computed by one owner rank and broadcast (KAISA's split of the work).

Each rank's hooks see gradients of its own (mean) loss, and the step uses their average over
the W ranks, so the global S = N_total Σ (g / W)(g / W)ᵀ: the summed g gᵀ is divided by W².
A is the mean over every rank's rows (sums and row counts are reduced, not means).

Scope: dense units only (every Linear). Experts under several ranks (AutoEP's expert-parallel
layout, where tokens reach an expert from every rank) are refused until their reduction over
the expert-data-parallel group is built and tested.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from koda.errors import KodaError
from koda.optim.kfac import KFACPreconditioner
from koda.optim.layers import Unit


class DataParallelKFAC(KFACPreconditioner):
    def __init__(self, model, config, lr=1.0, group=None):
        super().__init__(model, config, lr)
        self.group = group
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        experts = [u.name for u in self.units if u.expert_param]
        if experts and self.world > 1:
            raise KodaError(f"kfac: expert unit {experts[0]} on {self.world} ranks is not supported yet "
                            "(skip the experts with optimizer.kfac.skip)")

    def owner(self, index: int) -> int:
        return index % self.world

    def reduce_statistics(self, units: list[Unit]) -> None:
        # every rank captured on the same steps, so `units` lists the same units everywhere
        for u in units:
            flat = torch.cat([u.a_sum.flatten(), u.s_sum.flatten(), u.rows.float(),
                              torch.tensor([float(u.tokens)])])
            dist.all_reduce(flat, group=self.group)
            na, ns = u.a_sum.numel(), u.s_sum.numel()
            u.a_sum = flat[:na].view_as(u.a_sum)
            u.s_sum = flat[na:na + ns].view_as(u.s_sum) / self.world ** 2
            u.rows = flat[na + ns:na + ns + u.experts].round().long()
            u.tokens = int(flat[-1].round())

    def decompose(self, units: list[Unit] | None = None) -> None:
        ready = [(i, u) for i, u in enumerate(self.units) if u.A is not None]
        super().decompose([u for i, u in ready if self.owner(i) == self.rank])
        for i, u in ready:
            src = dist.get_global_rank(self.group, self.owner(i)) if self.group is not None else self.owner(i)
            for key, shape in self._decomposition_shapes(u).items():
                if self.owner(i) != self.rank:
                    u.decomposition[key] = torch.empty(shape, dtype=self._dtype)
                else:
                    u.decomposition[key] = u.decomposition[key].contiguous()
                dist.broadcast(u.decomposition[key], src=src, group=self.group)

    def _decomposition_shapes(self, u: Unit) -> dict[str, tuple[int, ...]]:
        E, a, s = u.experts, u.a_dim, u.s_dim
        shapes = {"gamma_a": (E,), "gamma_s": (E,)}
        if self.config.inverse == "eigen":
            shapes |= {"d_a": (E, a), "q_a": (E, a, a), "d_s": (E, s), "q_s": (E, s, s)}
        else:
            shapes |= {"inv_a": (E, a, a), "inv_s": (E, s, s)}
        return shapes
