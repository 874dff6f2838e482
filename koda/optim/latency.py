"""Torus-latency learning-rate scaling: lr_group = lr / (1 + kappa * L_group).

What it is for: on a torus, the collectives that synchronise a parameter's replicas cost
more the further apart (and the more contended) the ranks of its group are. Damping the
step of parameters whose group is slow is an opt-in knob for experiments that trade
progress per step against a smaller update where synchronisation is expensive; with
kappa = 0 (the default) the scale is exactly 1. It never makes replicas diverge: L comes
from the topology file and the placement alone (``koda.topology.group_latency``), and every
rank holding a replica of a parameter is in the same group, so computes the same L.

L is the modelled ring all-reduce time of one ``message_bytes`` buffer, in microseconds:
the data-parallel group (all ranks) for dense parameters, the rank's expert-data-parallel
group for experts.
"""

from __future__ import annotations

from dataclasses import dataclass

from koda.topology import Placement, Topology, group_latency

MESSAGE_BYTES = 16 * 2 ** 20      # a gradient-bucket-sized buffer


@dataclass(frozen=True)
class LatencyScales:
    dense_latency_us: float
    expert_latency_us: float
    dense: float                  # 1 / (1 + kappa * dense_latency_us)
    expert: float


def latency_scales(topology: Topology, placement: Placement, rank: int, kappa: float,
                   message_bytes: float = MESSAGE_BYTES) -> LatencyScales:
    g = group_latency(topology, placement, rank, message_bytes)
    dense_us, expert_us = g.dp_all_reduce_s * 1e6, g.edp_all_reduce_s * 1e6
    return LatencyScales(dense_us, expert_us, 1.0 / (1.0 + kappa * dense_us), 1.0 / (1.0 + kappa * expert_us))


def is_expert_parameter(name: str) -> bool:
    """KODA's (``mlp.experts.gate_up_proj``) and AutoEP's (``mlp.experts.w1``) expert tensors."""
    return ".experts." in f".{name}"
