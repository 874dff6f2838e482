"""The cluster as a 4-D torus: topology files, rank placement, latency model and launching.

Public entry points (the CLI commands ``koda topology`` and ``koda launch`` are thin over these):
``load_topology`` reads and validates a topology file, ``place`` chooses the hostfile order,
``step_cost`` and ``group_latency`` give the modelled communication of a placement.
"""

from koda.topology.cost import GroupLatency, StepCost, group_latency, step_cost
from koda.topology.placement import Placement, naive_placement, place
from koda.topology.spec import Topology, TopologyError, load_topology
from koda.topology.torus import Torus

__all__ = [
    "GroupLatency",
    "Placement",
    "StepCost",
    "Topology",
    "TopologyError",
    "Torus",
    "group_latency",
    "load_topology",
    "naive_placement",
    "place",
    "step_cost",
]
