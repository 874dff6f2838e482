"""Point-to-point cost on the torus: L_mem = alpha + beta d + gamma q, plus bytes over bandwidth.

This is the seeds' RDMA latency model with the serialisation term made explicit, so that the
collective model can charge link sharing:

    T(m bytes, d hops, q, c) = alpha + beta d + gamma q + m c / B     for d >= 1
    T(m bytes, 0 hops)       = alpha + m / B                           (same host)

alpha is the per-message software/NIC start-up cost (s), beta the per-hop router delay (s/hop),
gamma the delay per byte of queue found at the egress port (s/byte), q that queue depth (bytes;
the OU queue's stationary mean by default), B the bandwidth of one directed link (bytes/s) and
c the number of messages sharing the busiest link of the route at the same time (>= 1).

A copy between two ranks of the same host crosses no torus link and finds no network queue;
we charge it like an uncontended one-link transfer without the hop and queue terms. Hosts
usually have faster local paths (NVLink, shared memory), so this overstates local cost a little,
the same for every placement, and it never favours spreading ranks out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinkModel:
    """Link parameters: alpha (s), beta (s/hop), gamma (s/byte of queue), bandwidth (bytes/s)."""

    alpha: float
    beta: float
    gamma: float
    bandwidth: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"link {name} must be >= 0, got {getattr(self, name)}")
        if not self.bandwidth > 0:
            raise ValueError(f"link bandwidth must be > 0, got {self.bandwidth}")

    def l_mem(self, hops, queue: float = 0.0) -> np.ndarray | float:
        """The seeds' L_mem = alpha + beta d + gamma q (seconds); a same-host copy (d=0) pays alpha only."""
        d = np.asarray(hops, dtype=np.float64)
        out = self.alpha + np.where(d > 0, self.beta * d + self.gamma * max(queue, 0.0), 0.0)
        return float(out) if out.ndim == 0 else out

    def transfer(self, nbytes: float, hops, queue: float = 0.0, sharing=1) -> np.ndarray | float:
        """Time (s) to move ``nbytes`` over ``hops`` hops whose busiest link carries ``sharing`` messages."""
        d = np.asarray(hops, dtype=np.float64)
        c = np.where(d > 0, np.maximum(np.asarray(sharing, dtype=np.float64), 1.0), 1.0)
        out = self.l_mem(d, queue) + nbytes * c / self.bandwidth
        return float(out) if np.ndim(out) == 0 else out
