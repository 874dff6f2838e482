"""Which global ranks DeepSpeed puts in each process group, so the placement can aim at them.

Global ranks. ``deepspeed.launcher.launch`` numbers ranks host by host in hostfile order (the
order ``--include``/``--num_nodes`` keep; ``--include`` cannot reorder hosts), slot by slot
within a host: the host on line h of the hostfile holds ranks ``h*s .. h*s + s - 1`` for s slots
per host. pdsh's ``%n`` and OpenMPI's by-slot mapping follow the same order. So the *order of
hosts in the hostfile* is the only lever a launcher has over which rank sits where.

Groups, from ``deepspeed.utils.groups._create_expert_and_data_parallel`` (the path AutoEP and
the engine take when there is no tensor/sequence/pipeline parallelism, ``mp_size`` 1), with
world size W and expert-parallel size E:

* expert-parallel (EP) groups, which run the MoE all-to-alls: consecutive blocks
  ``[i*E, (i+1)*E)`` for i < W/E;
* expert-data-parallel (EDP) groups, over which ZeRO-3 partitions, gathers and reduces the
  expert weights: strided sets ``{i, i+E, i+2E, ...}`` for i < E;
* the data-parallel group of the dense (non-expert) weights: every rank, in rank order.

With the DeepSpeed config key ``use_data_before_expert_parallelism: true`` the roles swap: EDP
groups are the consecutive blocks of W/E and EP groups the sets strided by W/E.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankGroups:
    """Global ranks of every group: ``ep [W/E, E]``, ``edp [E, W/E]``, ``dp [1, W]``."""

    ep: np.ndarray
    edp: np.ndarray
    dp: np.ndarray

    def of_rank(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The EP, EDP and DP groups (global ranks, group order) that ``rank`` belongs to."""
        pick = [g[np.any(g == rank, axis=1)][0] for g in (self.ep, self.edp, self.dp)]
        return pick[0], pick[1], pick[2]


def deepspeed_groups(world_size: int, ep_size: int, data_before_expert: bool = False) -> RankGroups:
    """The groups DeepSpeed 0.19 forms for ``world_size`` ranks and expert-parallel size ``ep_size``."""
    if ep_size < 1 or world_size % ep_size:
        raise ValueError(f"expert_parallel_size {ep_size} does not divide world size {world_size}")
    ranks = np.arange(world_size)
    blocks = ranks.reshape(world_size // ep_size, ep_size)  # row i = [i*E, (i+1)*E)
    if data_before_expert:
        # EDP = consecutive blocks of W/E, EP = stride W/E.
        edp = ranks.reshape(ep_size, world_size // ep_size)
        ep = edp.T.copy()
    else:
        ep = blocks
        edp = blocks.T.copy()  # row i = {i, i+E, i+2E, ...}
    return RankGroups(ep=ep, edp=edp, dp=ranks[None, :])
