"""Modelled communication of one training step, and the per-rank latency other features scale by.

A step of ZeRO-3 with expert parallelism moves, per rank (koda.topology.groups for the groups):

* EP all-to-all: each MoE layer dispatches tokens to experts and combines them back, forward and
  backward: 4 all-to-alls per MoE layer of ``tokens_per_rank * top_k * hidden`` activations;
  all EP groups run them at once.
* dense ZeRO-3: the dense weights are partitioned over every rank (the DP group): gathered in
  forward, gathered again in backward, gradients reduce-scattered: 2 all-gathers + 1
  reduce-scatter of ``dense_params`` (the volume of one all-reduce and a half).
* expert ZeRO-3: each EP rank's share of the experts (``expert_params / E``) is partitioned over
  its EDP group (DeepSpeed tags routed experts with the ``edp`` partition group): the same
  2 all-gathers + 1 reduce-scatter, all EDP groups at once.

The figures are communication time under the alpha-beta link model (koda.topology.collectives),
summed as if nothing overlapped; they are for comparing placements, not predicting step time
(ZeRO-3 prefetch overlaps much of it with compute). The queue term uses the OU queue's mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from koda.topology.collectives import collective_time, hop_stats
from koda.topology.groups import deepspeed_groups
from koda.topology.spec import Topology, WorkloadSpec


@dataclass(frozen=True)
class StepCost:
    """Per-step communication figures of one placement (seconds, hops)."""

    ep_all_to_all_s: float
    dense_zero_s: float
    expert_zero_s: float
    ep_mean_hops: float
    ep_max_hops: int
    dp_ring_mean_hops: float
    edp_ring_mean_hops: float

    @property
    def total_s(self) -> float:
        return self.ep_all_to_all_s + self.dense_zero_s + self.expert_zero_s

    def as_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s}


def _ring_hops(topology: Topology, nodes: np.ndarray) -> float:
    """Mean hops from each rank to its ring successor, over ``[G, p]`` groups."""
    if nodes.shape[1] <= 1:
        return 0.0
    c = topology.torus.coords(nodes)
    return float(topology.torus.hops(c, np.roll(c, -1, axis=1)).mean())


def step_cost(topology: Topology, rank_nodes: np.ndarray, workload: WorkloadSpec | None = None) -> StepCost:
    """Modelled communication of one step with global rank r on torus node ``rank_nodes[r]``."""
    w = workload or topology.workload
    torus, link, q = topology.torus, topology.links.model(), topology.queue.mu
    E = topology.parallel.expert_parallel_size
    groups = deepspeed_groups(topology.world_size, E, topology.parallel.data_before_expert)
    ep, edp, dp = rank_nodes[groups.ep], rank_nodes[groups.edp], rank_nodes[groups.dp]

    a2a_bytes = w.tokens_per_rank * w.top_k * w.hidden * w.bytes_per_activation
    a2a = collective_time(torus, link, ep, "all_to_all", a2a_bytes, q).max()

    def zero3(nodes: np.ndarray, nbytes: float) -> float:
        gather = collective_time(torus, link, nodes, "all_gather", nbytes, q).max()
        scatter = collective_time(torus, link, nodes, "reduce_scatter", nbytes, q).max()
        return float(2 * gather + scatter)

    mean_hops, max_hops = hop_stats(torus, ep)
    return StepCost(
        ep_all_to_all_s=float(4 * w.moe_layers * a2a),
        dense_zero_s=zero3(dp, w.dense_params * w.bytes_per_param),
        expert_zero_s=zero3(edp, w.expert_params / E * w.bytes_per_param),
        ep_mean_hops=float(mean_hops.mean()),
        ep_max_hops=int(max_hops.max()),
        dp_ring_mean_hops=_ring_hops(topology, dp),
        edp_ring_mean_hops=_ring_hops(topology, edp),
    )


@dataclass(frozen=True)
class GroupLatency:
    """Modelled collective latency of one rank's groups for one ``message_bytes`` buffer (seconds).

    ``dp_all_reduce_s``: ring all-reduce over the dense data-parallel group (every rank).
    ``edp_all_reduce_s``: ring all-reduce over the rank's expert-data-parallel group.
    ``ep_all_to_all_s``: all-to-all over the rank's expert-parallel group.
    Link sharing counts every group of the same kind running at once, as in a real step.
    """

    rank: int
    host: str
    coords: tuple[int, ...]
    ep_ranks: tuple[int, ...]
    edp_ranks: tuple[int, ...]
    dp_all_reduce_s: float
    edp_all_reduce_s: float
    ep_all_to_all_s: float
    ep_mean_hops: float


def group_latency(topology: Topology, placement, rank: int, message_bytes: float) -> GroupLatency:
    """Latency the model gives ``rank``'s groups for a ``message_bytes`` collective.

    This is the hook for latency-aware optimisation (e.g. the opt-in learning-rate damping): it
    depends only on the topology file and the placement, so every rank can compute it locally,
    with no communication, from ``koda.topology.place(topology)`` and its own global rank.
    """
    if not 0 <= rank < topology.world_size:
        raise ValueError(f"rank {rank} outside world size {topology.world_size}")
    torus, link, q = topology.torus, topology.links.model(), topology.queue.mu
    nodes = placement.rank_nodes(topology)
    groups = deepspeed_groups(
        topology.world_size, topology.parallel.expert_parallel_size, topology.parallel.data_before_expert
    )
    ep_i = int(np.flatnonzero(np.any(groups.ep == rank, axis=1))[0])
    edp_i = int(np.flatnonzero(np.any(groups.edp == rank, axis=1))[0])
    ep_t = collective_time(torus, link, nodes[groups.ep], "all_to_all", message_bytes, q)[ep_i]
    edp_t = collective_time(torus, link, nodes[groups.edp], "all_reduce", message_bytes, q)[edp_i]
    dp_t = collective_time(torus, link, nodes[groups.dp], "all_reduce", message_bytes, q)[0]
    mean_hops, _ = hop_stats(torus, nodes[groups.ep[ep_i]])
    host = topology.hosts[placement.order[rank // topology.slots_per_host]]
    return GroupLatency(
        rank=rank,
        host=host.name,
        coords=tuple(host.coords),
        ep_ranks=tuple(int(r) for r in groups.ep[ep_i]),
        edp_ranks=tuple(int(r) for r in groups.edp[edp_i]),
        dp_all_reduce_s=float(dp_t),
        edp_all_reduce_s=float(edp_t),
        ep_all_to_all_s=float(ep_t),
        ep_mean_hops=float(mean_hops[0]),
    )
