"""K-FAC over data-parallel ranks (``DataParallelKFAC``; the process groups come from
``koda.distributed.comm``): factor statistics summed over the group, each unit's
decomposition computed by one owner rank and broadcast (KAISA's split of the work).

Each rank's hooks see gradients of its own (mean) loss, and the step uses their average over
the W ranks, so the global S = N_total Σ (g / W)(g / W)ᵀ: the summed g gᵀ is divided by W².
A is the mean over every rank's rows (sums and row counts are reduced, not means).

AutoEP experts: a rank holds E/ep experts, replicated over its expert-data-parallel (EDP)
group, and an expert's rows come from the ep ranks of its expert-parallel group; the hooks
count the local block's tokens, so the experts' statistics are summed over the EDP group and
their token count multiplied by ep. Their decompositions are computed where they live.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from koda.distributed.comm import expert_groups
from koda.errors import KodaError
from koda.optim.clipping import RawGradientClip
from koda.optim.kfac import KFACPreconditioner
from koda.optim.layers import Unit


class DataParallelKFAC(KFACPreconditioner):
    def __init__(self, model, config, lr=1.0, group=None, clip: float = 0.0):
        super().__init__(model, config, lr)
        self.group = group
        self.clipping = RawGradientClip(self.clipping.names, clip, partitioned=True, group=group)
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        params = dict(model.named_parameters())
        # AutoEP experts: each rank holds E/ep experts, replicated over its expert-data-parallel
        # group; tokens reach them from every rank of the expert-parallel group.
        self._expert_groups = {u.name: self._expert_group(params[u.weight]) for u in self.units if u.expert_param}

    @staticmethod
    def _expert_group(param):
        groups = expert_groups(param)
        if groups is None:
            raise KodaError("kfac: expert units on several ranks need AutoEP's expert placement")
        return groups

    def owner(self, index: int) -> int:
        return index % self.world

    def reduce_statistics(self, units: list[Unit]) -> None:
        # every rank captured on the same steps, so `units` lists the same units everywhere
        for u in units:
            group, ep, _ = self._expert_groups.get(u.name, (self.group, 1, None))
            flat = torch.cat([u.a_sum.flatten(), u.s_sum.flatten(), u.rows.float(),
                              torch.tensor([float(u.tokens)])])
            dist.all_reduce(flat, group=group)
            na, ns = u.a_sum.numel(), u.s_sum.numel()
            u.a_sum = flat[:na].view_as(u.a_sum)
            u.rows = flat[na + ns:na + ns + u.experts].round().long()
            # an expert's tokens came from its EP group's ep ranks: N_total = ep * (summed tokens)
            u.tokens = int(flat[-1].round()) * ep
            u.s_sum = flat[na:na + ns].view_as(u.s_sum) / self.world ** 2

    def total_vg(self, dense: float, experts: float) -> float:
        """Each expert lives on one rank of its expert-parallel group: sum their share there."""
        if self._expert_groups:
            ep_group = next(iter(self._expert_groups.values()))[2]
            share = torch.tensor([experts], dtype=torch.float64)
            dist.all_reduce(share, group=ep_group)
            experts = float(share)
        return dense + experts

    def decompose(self, units: list[Unit] | None = None) -> None:
        """Dense units: one owner each, broadcast. Expert units hold this rank's experts only
        and are decomposed where they live. Every rank then settles the same apply dtypes
        (they follow from the broadcast condition numbers)."""
        ready = [(i, u) for i, u in enumerate(self.units) if u.A is not None]
        dense = [(i, u) for i, u in ready if u.name not in self._expert_groups]
        own = [u for i, u in ready if u.name in self._expert_groups or self.owner(i) == self.rank]
        self.factorise(own)
        self.refine(own)
        for i, u in dense:
            src = dist.get_global_rank(self.group, self.owner(i)) if self.group is not None else self.owner(i)
            mine = self.owner(i) == self.rank
            # the owner's dtype first (auto may have refined the unit in fp64)
            wide = torch.tensor([float(mine and u.decomposition["inv_a"].dtype == torch.float64)])
            dist.broadcast(wide, src=src, group=self.group)
            dtype = torch.float64 if wide.item() else torch.float32
            for key, shape in self._decomposition_shapes(u).items():
                if not mine:
                    u.decomposition[key] = torch.empty(shape, dtype=dtype)
                else:
                    u.decomposition[key] = u.decomposition[key].contiguous()
                dist.broadcast(u.decomposition[key], src=src, group=self.group)
        self.settle([u for _, u in ready])

    @staticmethod
    def _decomposition_shapes(u: Unit) -> dict[str, tuple[int, ...]]:
        E, a, s = u.experts, u.a_dim, u.s_dim
        return {"gamma_a": (E,), "gamma_s": (E,), "inv_a": (E, a, a), "inv_s": (E, s, s), "cond": (1,)}
