"""Alpha-beta cost of the collectives ZeRO-3 and expert parallelism run, on the torus links.

Model. A collective over a group of p ranks moving an n-byte buffer runs in synchronous rounds.
In each round every rank sends one message of n/p bytes; the message follows the torus's
dimension-order route (``Torus.route_links``) and costs ``LinkModel.transfer`` with its hop count
and the number of messages sharing the busiest directed link on its route in that round. A round
lasts as long as its slowest message; the collective is the sum of its rounds.

    ring all-gather / reduce-scatter: p - 1 rounds, rank i sends to ring successor i + 1
    ring all-reduce:                  2 (p - 1) rounds (a reduce-scatter, then an all-gather)
    all-to-all (pairwise shift):      p - 1 rounds, in round k rank i sends to rank i + k (mod p)

Successor order is the group's rank order: that is the ring gloo's ring algorithms build, and
the order DeepSpeed lists group members in. (NCCL picks its own rings from the hardware, so for
NCCL the ring figures are what a topology-blind ring would cost, an upper bound.)

Groups of one kind run at the same time in a step (all expert-parallel groups do their
all-to-all together), so link sharing is counted over *all* groups passed in one call: two
interleaved groups that cross the same cable slow each other down, two compact ones do not.
The reduction arithmetic is not charged (it is the same for every placement).

On a 1-D ring of p nodes with the group in ring order, every message is one hop on its own
link, and ring all-reduce costs 2 (p - 1) (alpha + beta + gamma q + n / (p B)): the textbook
2 (p - 1) alpha + 2 (p - 1) / p n / B with the per-hop terms added. The tests check this.
"""

from __future__ import annotations

import numpy as np

from koda.topology.latency import LinkModel
from koda.topology.torus import Torus

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def _round_times(
    torus: Torus, link: LinkModel, src: np.ndarray, dst: np.ndarray, nbytes: float, queue: float
) -> np.ndarray:
    """Time of one round for each group: ``src``/``dst`` are ``[G, p]`` node indices."""
    shape = src.shape
    routes = torus.route_links(src.ravel(), dst.ravel())  # [G*p, max_hops], -1 padded
    used = routes >= 0
    hops = used.sum(axis=1)
    if routes.size:
        load = np.bincount(routes[used], minlength=torus.num_links)
        share = np.where(used, load[np.where(used, routes, 0)], 0).max(axis=1)
    else:
        share = np.ones(len(hops), dtype=np.int64)
    t = link.transfer(nbytes, hops, queue, share)
    return np.asarray(t).reshape(shape).max(axis=1)


def collective_time(
    torus: Torus,
    link: LinkModel,
    groups: np.ndarray,
    kind: str,
    nbytes: float,
    queue: float = 0.0,
) -> np.ndarray:
    """Modelled seconds of one collective for each of ``G`` concurrent groups.

    ``groups`` is ``[G, p]``: the torus node of each rank, in group-rank order. ``nbytes`` is the
    full buffer: the all-reduced tensor, the gathered result, or everything one rank sends in an
    all-to-all. Returns ``[G]`` seconds.
    """
    if kind not in KINDS:
        raise ValueError(f"collective kind must be one of {KINDS}, got {kind!r}")
    g = np.atleast_2d(np.asarray(groups, dtype=np.int64))
    p = g.shape[1]
    if p <= 1 or nbytes <= 0:
        return np.zeros(g.shape[0])
    chunk = nbytes / p
    if kind == "all_to_all":
        total = np.zeros(g.shape[0])
        for k in range(1, p):
            total += _round_times(torus, link, g, np.roll(g, -k, axis=1), chunk, queue)
        return total
    rounds = 2 * (p - 1) if kind == "all_reduce" else p - 1
    # Every ring round has the same traffic pattern, so one evaluation serves them all.
    return rounds * _round_times(torus, link, g, np.roll(g, -1, axis=1), chunk, queue)


def ring_all_reduce_closed_form(p: int, nbytes: float, link: LinkModel, queue: float = 0.0) -> float:
    """Textbook ring all-reduce on a 1-D ring of ``p`` one-hop neighbours, for checking the model."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * (link.alpha + link.beta + link.gamma * queue + nbytes / (p * link.bandwidth))


def hop_stats(torus: Torus, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max hops between distinct ranks of each group: two ``[G]`` arrays.

    Ranks on the same host count as 0 hops, so a group that fits in one host scores 0.
    """
    g = np.atleast_2d(np.asarray(groups, dtype=np.int64))
    p = g.shape[1]
    if p <= 1:
        return np.zeros(g.shape[0]), np.zeros(g.shape[0], dtype=np.int64)
    c = torus.coords(g)  # [G, p, ndim]
    d = torus.hops(c[:, :, None, :], c[:, None, :, :])  # [G, p, p]
    off = ~np.eye(p, dtype=bool)
    return d[:, off].mean(axis=1), d[:, off].max(axis=1)
