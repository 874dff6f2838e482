"""The k-ary n-cube the cluster is wired as: a Cartesian product of cycles C_d1 x ... x C_dn.

KODA's topology files describe 4-D tori (any dimension may be 1), but nothing here depends on
n = 4, so the tests can check 1-D rings and random 2- to 5-D tori against a general graph search.

Nodes are numbered in row-major order of their coordinates (last dimension fastest), the same
order as ``numpy.ravel_multi_index``. Links are directed: each node has one outgoing link per
dimension and direction, numbered ``(node * n_dims + dim) * 2 + (0 for +1, 1 for -1)``. A
dimension of size 2 has a single neighbour, reached by its "+1" link in both directions (one
cable each way); a dimension of size 1 has no links at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Torus:
    """A torus with the given dimension sizes (each >= 1)."""

    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.dims or any(int(d) < 1 for d in self.dims):
            raise ValueError(f"torus dims must be positive integers, got {self.dims}")
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))

    @property
    def ndim(self) -> int:
        return len(self.dims)

    @property
    def size(self) -> int:
        """Number of nodes, the product of the dimension sizes."""
        return int(np.prod(self.dims))

    @property
    def num_links(self) -> int:
        """Number of directed link ids (including the unused ids of size-1/size-2 dimensions)."""
        return self.size * self.ndim * 2

    # --- coordinates ---------------------------------------------------------------------------

    def index(self, coords) -> np.ndarray | int:
        """Node index of coordinates ``[..., ndim]`` (row-major, last dimension fastest)."""
        c = np.asarray(coords, dtype=np.int64)
        idx = np.ravel_multi_index(tuple(np.moveaxis(c, -1, 0)), self.dims)
        return int(idx) if np.ndim(idx) == 0 else idx

    def coords(self, index) -> np.ndarray:
        """Coordinates ``[..., ndim]`` of node index(es)."""
        return np.stack(np.unravel_index(np.asarray(index, dtype=np.int64), self.dims), axis=-1)

    @cached_property
    def all_coords(self) -> np.ndarray:
        """Coordinates of every node, ``[size, ndim]`` int64, in index order."""
        return self.coords(np.arange(self.size))

    # --- distances -----------------------------------------------------------------------------

    def hops(self, a, b) -> np.ndarray | int:
        """Shortest-path hop count between coordinates ``a`` and ``b`` (broadcasting ``[..., ndim]``).

        Closed form: on a cycle of length d the distance is min(|delta|, d - |delta|), and on a
        Cartesian product of graphs distances add over the factors.
        """
        delta = np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64))
        d = np.minimum(delta, np.asarray(self.dims) - delta).sum(axis=-1)
        return int(d) if np.ndim(d) == 0 else d

    def distance_matrix(self, nodes=None) -> np.ndarray:
        """All-pairs hop matrix ``[m, m]`` (int32) over ``nodes`` (indices; default every node).

        Vectorised over one dimension at a time, so the peak temporary is one ``[m, m]`` array
        rather than ``[m, m, ndim]``; a 4096-node torus needs about 200 MB.
        """
        c = self.all_coords if nodes is None else self.coords(nodes)
        out = np.zeros((len(c), len(c)), dtype=np.int32)
        for k, d in enumerate(self.dims):
            delta = np.abs(c[:, None, k] - c[None, :, k]).astype(np.int32)
            out += np.minimum(delta, d - delta)
        return out

    # --- routing -------------------------------------------------------------------------------

    def route_links(self, src, dst) -> np.ndarray:
        """Directed link ids used by dimension-order routing from ``src`` to ``dst`` node indices.

        Returns ``[m, max_hops]`` int64 for ``m`` messages, padded with -1. Each message corrects
        dimension 0 first, then 1, and so on, going the short way round each cycle (the "+1" way
        on a tie), which is deadlock-free on tori with virtual channels and is what most torus
        fabrics do by default; the number of links equals the closed-form hop distance.
        """
        src = np.atleast_1d(np.asarray(src, dtype=np.int64))
        dst = np.atleast_1d(np.asarray(dst, dtype=np.int64))
        cur = self.coords(src).copy()  # [m, ndim]
        tgt = self.coords(dst)
        dims = np.asarray(self.dims)
        fwd = (tgt - cur) % dims  # steps needed going "+1"
        go_plus = fwd <= dims - fwd  # tie goes "+1"
        steps = np.where(go_plus, fwd, dims - fwd)  # [m, ndim]
        total = steps.sum(axis=1)
        width = int(total.max()) if len(total) else 0
        out = np.full((len(src), max(width, 0)), -1, dtype=np.int64)
        col = np.zeros(len(src), dtype=np.int64)
        rows = np.arange(len(src))
        for k, d in enumerate(self.dims):
            direction = np.where(go_plus[:, k], 0, 1)
            sign = np.where(go_plus[:, k], 1, -1)
            for _ in range(int(steps[:, k].max()) if len(src) else 0):
                moving = steps[:, k] > 0
                node = np.ravel_multi_index(tuple(cur.T), self.dims)
                link = (node * self.ndim + k) * 2 + direction
                out[rows[moving], col[moving]] = link[moving]
                cur[moving, k] = (cur[moving, k] + sign[moving]) % d
                col[moving] += 1
                steps[moving, k] -= 1
        return out
