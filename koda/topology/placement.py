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

from koda.topology.collectives import collective_time
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


def _block_orders(topology: Topology, hosts_per_group: int, max_shapes: int = 4):
    """Node orders that tile a fully populated torus with EP blocks (see module docstring).

    Large tori admit dozens of block shapes; only the ``max_shapes`` whose lone block has the
    cheapest modelled all-to-all are expanded into the 16 orders each, which keeps a 4096-host
    search to about a minute. Everything here is deterministic: every node of a ``no_ssh`` launch
    computes the placement itself and must get the same answer.
    """
    dims = topology.torus.dims
    link, q = topology.links.model(), topology.queue.mu
    shapes = _divisor_shapes(dims, hosts_per_group)
    if len(shapes) > max_shapes:

        def lone_block(b: tuple[int, ...]) -> float:
            nodes = topology.torus.index(np.array(_row_major(b, tuple(range(len(b))))))
            return float(collective_time(topology.torus, link, nodes[None, :], "all_to_all", 1e8, q)[0])

        lone = {b: lone_block(b) for b in shapes}
        shapes = sorted(shapes, key=lambda b: (lone[b], b))[:max_shapes]
    for b in shapes:
        quotient = tuple(d // bi for d, bi in zip(dims, b, strict=True))
        inner_axes = tuple(k for k in range(len(dims)) if b[k] > 1)
        outer_axes = tuple(k for k in range(len(dims)) if quotient[k] > 1)
        for inner_p, walk, outer_p, mirror in itertools.product(
            dict.fromkeys([inner_axes, inner_axes[::-1]]),  # dedupe, keep order
            ("snake", "row-major"),
            dict.fromkeys([outer_axes, outer_axes[::-1]]),
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


_FAR = np.int64(np.iinfo(np.int64).max)  # typed: a bare Python int would be cast to the array's dtype


def _nearest_chain(dist: np.ndarray, start: int, pool: list[int]) -> list[int]:
    """Greedy nearest-neighbour walk through ``pool`` from ``start`` (ties to the lower index)."""
    pool_arr = np.asarray(sorted(pool), dtype=np.int64)
    free = pool_arr != start
    chain = [start]
    for _ in range(len(pool_arr) - 1):
        d = np.where(free, dist[chain[-1], pool_arr].astype(np.int64), _FAR)
        k = int(np.argmin(d))  # argmin takes the first minimum: the lowest index on ties
        free[k] = False
        chain.append(int(pool_arr[k]))
    return chain


def _greedy_orders(topology: Topology, hosts_per_group: int):
    """Host orders for any host set: a nearest-neighbour chain, and compact grown clusters."""
    n = len(topology.hosts)
    dist = topology.torus.distance_matrix(topology.host_nodes)
    start = int(np.argmin(topology.host_nodes))
    chain = _nearest_chain(dist, start, list(range(n)))
    yield "nearest-neighbour chain", chain
    if hosts_per_group > 1:
        # Seed each group with the first free host along the chain, then add the free host
        # closest to the group so far (sum of hops), ties to the earlier one along the chain.
        chain_arr = np.asarray(chain)
        free = np.ones(n, dtype=bool)  # indexed by position along the chain
        order: list[int] = []
        while free.any():
            first = int(np.argmax(free))
            free[first] = False
            group = [int(chain_arr[first])]
            acc = dist[group[0], chain_arr].astype(np.int64)
            while len(group) < hosts_per_group and free.any():
                k = int(np.argmin(np.where(free, acc, _FAR)))
                free[k] = False
                group.append(int(chain_arr[k]))
                acc += dist[group[-1], chain_arr]
            order += _nearest_chain(dist, group[0], group)
        yield "grown clusters", order


# Modelled times within this fraction count as equal; hop counts then decide. Without it, a
# microsecond of modelled difference would reorder the hosts for nothing measurable.
_TIE = 1e-3


def _better(new: StepCost, best: StepCost) -> bool:
    """Never accept a higher modelled time; prefer a clearly lower one, then fewer hops."""
    if new.total_s > best.total_s:
        return False
    if new.total_s < best.total_s * (1 - _TIE):
        return True
    hops = (new.ep_mean_hops, new.dp_ring_mean_hops + new.edp_ring_mean_hops)
    return hops < (best.ep_mean_hops, best.dp_ring_mean_hops + best.edp_ring_mean_hops)


def _swap_search(topology: Topology, order: list[int], best: StepCost, budget: int, seed: int):
    """Seeded first-improvement pairwise swaps, at most ``budget`` evaluations.

    Only a clearly lower modelled time is taken here (not the hop tie-break), so the swaps do not
    shuffle a structured order for cosmetic gains.
    """
    rng = np.random.default_rng(seed)
    n = len(order)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    evals, improved, changed = 0, True, False
    while improved and evals < budget:
        improved = False
        for k in rng.permutation(len(pairs)):
            if evals >= budget:
                break
            i, j = pairs[k]
            trial = list(order)
            trial[i], trial[j] = trial[j], trial[i]
            evals += 1
            cost = Placement(tuple(trial)).cost(topology)
            if cost.total_s < best.total_s * (1 - _TIE):
                order, best, improved, changed = trial, cost, True, True
    return order, changed


def place(topology: Topology, *, swap_budget: int | None = None, seed: int = 0) -> Placement:
    """The hostfile order with the lowest modelled step communication (never worse than file order).

    Candidates are compared by modelled time; within 0.1% of each other, by EP-group hops and
    then ring hops. The file order is the first candidate, so it stays unless something beats it.
    ``swap_budget`` caps the swap search's cost evaluations; by default 300, fewer for big
    clusters where one evaluation is slower (a count, not a time limit, so that every node
    computes the same placement).
    """
    naive = naive_placement(topology)
    n = len(topology.hosts)
    if swap_budget is None:
        swap_budget = min(300, max(20, 20000 // max(n, 1)))
    s, E = topology.slots_per_host, topology.parallel.expert_parallel_size
    hosts_per_group = E // s if E % s == 0 else (1 if s % E == 0 else 0)
    candidates: list[tuple[str, list[int]]] = []
    if hosts_per_group and n == topology.torus.size:
        host_at = np.empty(topology.torus.size, dtype=np.int64)
        host_at[topology.host_nodes] = np.arange(n)
        candidates += [(name, host_at[nodes].tolist()) for name, nodes in _block_orders(topology, hosts_per_group)]
    candidates += list(_greedy_orders(topology, max(hosts_per_group, 1)))

    best, best_cost = naive, naive.cost(topology)
    for name, order in candidates:
        if sorted(order) != list(range(n)):  # a bug, not a user error: every host exactly once
            raise AssertionError(f"placement candidate {name!r} is not a permutation of the hosts")
        cost = Placement(tuple(order)).cost(topology)
        if _better(cost, best_cost):
            best, best_cost = Placement(tuple(order), name), cost
    if swap_budget > 0 and n > 2:
        order, changed = _swap_search(topology, list(best.order), best_cost, swap_budget, seed)
        if changed:
            best = Placement(tuple(order), f"{best.method} + swaps")
    return best
