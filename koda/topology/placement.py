"""Choosing the hostfile order: which host gets which block of global ranks.

DeepSpeed hands out global ranks in hostfile order and builds expert-parallel groups from
consecutive ranks and expert-data-parallel / data-parallel rings from strided or all ranks
(koda.topology.groups). Hosts sit at fixed torus coordinates, so the only choice is the order of
hosts, and a good order makes every EP group (all-to-all heavy) a compact patch of the torus and
makes consecutive ranks, and consecutive members of each EDP ring, torus neighbours.

Like JAX's ``create_device_mesh`` for TPU tori, which maps logical mesh axes onto contiguous
products of physical axes, the main candidates tile the torus with sub-blocks: when every torus
position holds a host and E/s hosts make an EP group (s slots per host), we try every block
shape b with b_i | d_i and prod(b) = E/s; positions within a block, and blocks over the
quotient torus, are visited in boustrophedon ("snake") order so that consecutive ranks are
neighbours (row-major order inside a block is tried too), with several axis priorities and with
odd blocks mirrored or not. For partial tori
and odd group sizes, greedy candidates grow EP groups from nearest hosts. The best candidate is
polished by a bounded, seeded pairwise-swap search.

Every candidate, the file's own order included, is scored with the same model
(``koda.topology.cost.step_cost``), and the lowest modelled step communication wins; the file
order wins ties. So the chosen placement is never worse than the naive order under the model,
and ``koda topology show`` prints both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from koda.topology.cost import StepCost, step_cost
from koda.topology.spec import Topology


@dataclass(frozen=True)
class Placement:
    """Hostfile order: ``order[k]`` is the index (in the topology file) of the k-th host."""

    order: tuple[int, ...]
    method: str = "file order"

    def rank_nodes(self, topology: Topology) -> np.ndarray:
        """Torus node of every global rank ``[W]``: host order[r // slots] holds rank r."""
        nodes = topology.host_nodes[np.asarray(self.order, dtype=np.int64)]
        return np.repeat(nodes, topology.slots_per_host)

    def cost(self, topology: Topology) -> StepCost:
        return step_cost(topology, self.rank_nodes(topology))


def naive_placement(topology: Topology) -> Placement:
    """The order the hosts are listed in the file: what a hand-written hostfile would do."""
    return Placement(tuple(range(len(topology.hosts))), "file order")


# --- orders over grids --------------------------------------------------------------------------


def snake(shape: tuple[int, ...], priority: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Boustrophedon visit of a grid, ``priority`` slowest axis first: consecutive cells are neighbours."""
    if not priority:
        return [tuple(0 for _ in shape)]
    axis, rest = priority[0], priority[1:]
    inner = snake(shape, rest)
    out = []
    for v in range(shape[axis]):
        for cell in inner if v % 2 == 0 else reversed(inner):
            c = list(cell)
            c[axis] = v
            out.append(tuple(c))
    return out


def _row_major(shape: tuple[int, ...], priority: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Lexicographic visit, ``priority`` slowest axis first. Within an EP group this can beat a
    snake: the all-to-all's shift-by-k rounds then pair ranks along single axes (fewer shared links)."""
    if not priority:
        return [tuple(0 for _ in shape)]
    out = []
    for v in itertools.product(*(range(shape[a]) for a in priority)):
        c = [0] * len(shape)
        for a, x in zip(priority, v, strict=True):
            c[a] = x
        out.append(tuple(c))
    return out


def _divisor_shapes(dims: tuple[int, ...], target: int) -> list[tuple[int, ...]]:
    choices = [[b for b in range(1, d + 1) if d % b == 0] for d in dims]
    return [b for b in itertools.product(*choices) if int(np.prod(b)) == target]


def _block_orders(topology: Topology, hosts_per_group: int):
    """Node orders that tile a fully populated torus with EP blocks (see module docstring)."""
    dims = topology.torus.dims
    for b in _divisor_shapes(dims, hosts_per_group):
        quotient = tuple(d // bi for d, bi in zip(dims, b, strict=True))
        inner_axes = tuple(k for k in range(len(dims)) if b[k] > 1)
        outer_axes = tuple(k for k in range(len(dims)) if quotient[k] > 1)
        for inner_p, walk, outer_p, mirror in itertools.product(
            {inner_axes, inner_axes[::-1]},
            ("snake", "row-major"),
            {outer_axes, outer_axes[::-1]},
            (False, True),
        ):
            inner = np.array(snake(b, inner_p) if walk == "snake" else _row_major(b, inner_p))
            order = []
            for j, blk in enumerate(snake(quotient, outer_p)):
                cells = inner[::-1] if (mirror and j % 2) else inner
                order.append(cells + np.asarray(blk) * np.asarray(b))
            coords = np.concatenate(order)
            name = f"blocks {'x'.join(map(str, b))}, {walk} inside{', mirrored' if mirror else ''}"
            yield name, topology.torus.index(coords)


def _nearest_chain(dist: np.ndarray, start: int, pool: list[int]) -> list[int]:
    """Greedy nearest-neighbour walk through ``pool`` from ``start`` (ties to the lower index)."""
    chain, left = [start], [p for p in pool if p != start]
    while left:
        nxt = min(left, key=lambda j: (dist[chain[-1], j], j))
        chain.append(nxt)
        left.remove(nxt)
    return chain


def _greedy_orders(topology: Topology, hosts_per_group: int):
    """Host orders for any host set: a nearest-neighbour chain, and compact grown clusters."""
    n = len(topology.hosts)
    dist = topology.torus.distance_matrix(topology.host_nodes)
    start = int(np.argmin(topology.host_nodes))
    chain = _nearest_chain(dist, start, list(range(n)))
    yield "nearest-neighbour chain", chain
    if hosts_per_group > 1:
        left, order = list(chain), []
        while left:
            group = [left.pop(0)]
            while len(group) < hosts_per_group and left:
                nxt = min(left, key=lambda j: (dist[group, j].sum(), chain.index(j)))
                group.append(nxt)
                left.remove(nxt)
            order += _nearest_chain(dist, group[0], group)
        yield "grown clusters", order


def _swap_search(topology: Topology, order: list[int], best: float, budget: int, seed: int):
    """Seeded first-improvement pairwise swaps, at most ``budget`` evaluations."""
    rng = np.random.default_rng(seed)
    n = len(order)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    evals = 0
    improved = True
    while improved and evals < budget:
        improved = False
        for k in rng.permutation(len(pairs)):
            if evals >= budget:
                break
            i, j = pairs[k]
            trial = list(order)
            trial[i], trial[j] = trial[j], trial[i]
            evals += 1
            t = Placement(tuple(trial)).cost(topology).total_s
            if t < best * (1 - 1e-12):
                order, best, improved = trial, t, True
    return order, best


def place(topology: Topology, *, swap_budget: int = 300, seed: int = 0) -> Placement:
    """The hostfile order with the lowest modelled step communication (never worse than file order)."""
    naive = naive_placement(topology)
    n = len(topology.hosts)
    s, E = topology.slots_per_host, topology.parallel.expert_parallel_size
    hosts_per_group = E // s if E % s == 0 else (1 if s % E == 0 else 0)
    candidates: list[tuple[str, list[int]]] = []
    if hosts_per_group and n == topology.torus.size:
        host_at = np.empty(topology.torus.size, dtype=np.int64)
        host_at[topology.host_nodes] = np.arange(n)
        candidates += [
            (name, host_at[nodes].tolist()) for name, nodes in _block_orders(topology, hosts_per_group)
        ]
    candidates += list(_greedy_orders(topology, max(hosts_per_group, 1)))

    best, best_t = naive, naive.cost(topology).total_s
    for name, order in candidates:
        t = Placement(tuple(order)).cost(topology).total_s
        if t < best_t * (1 - 1e-12):
            best, best_t = Placement(tuple(order), name), t
    if swap_budget > 0 and n > 2:
        order, t = _swap_search(topology, list(best.order), best_t, swap_budget, seed)
        if t < best_t * (1 - 1e-12):
            best = Placement(tuple(order), f"{best.method} + swaps")
    return best
