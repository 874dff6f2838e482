"""Closed-form hop distances and routes against a general graph search on the same torus."""

import itertools

import networkx as nx
import numpy as np
import pytest

from koda.topology.torus import Torus


def _nx_torus(dims):
    # grid_graph lists its node tuples in the reverse order of `dim`; reverse so labels match.
    g = nx.grid_graph(dim=list(dims)[::-1], periodic=True)
    g = nx.relabel_nodes(g, lambda n: n if isinstance(n, tuple) else (n,))  # 1-D labels are ints
    assert set(g.nodes) == set(itertools.product(*(range(d) for d in dims)))
    return g


def _random_dims(rng):
    return tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 6)))


@pytest.mark.parametrize("seed", range(12))
def test_distance_matrix_equals_networkx_shortest_paths(seed):
    dims = _random_dims(np.random.default_rng(seed))
    torus = Torus(dims)
    if torus.size > 400:
        dims = dims[:3]
        torus = Torus(dims)
    dist = torus.distance_matrix()
    lengths = dict(nx.all_pairs_shortest_path_length(_nx_torus(dims)))
    coords = [tuple(int(x) for x in c) for c in torus.all_coords]
    expected = np.array([[lengths[a][b] for b in coords] for a in coords])
    np.testing.assert_array_equal(dist, expected)


@pytest.mark.parametrize("dims", [(4, 4, 2, 2), (5, 3, 1, 2), (7,), (2, 2, 2, 2)])
def test_closed_form_hops_and_route_lengths_agree(dims):
    torus = Torus(dims)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, torus.size, 200), rng.integers(0, torus.size, 200)
    hops = torus.hops(torus.coords(a), torus.coords(b))
    np.testing.assert_array_equal(hops, torus.distance_matrix()[a, b])
    routes = torus.route_links(a, b)
    np.testing.assert_array_equal((routes >= 0).sum(axis=1), hops)


def test_route_links_are_consecutive_torus_edges():
    torus = Torus((4, 3, 2, 1))
    g = _nx_torus(torus.dims)
    for src, dst in [(0, 23), (5, 17), (11, 0), (7, 7)]:
        route = torus.route_links([src], [dst])[0]
        node = src
        for link in route[route >= 0]:
            n, rest = divmod(int(link), torus.ndim * 2)
            assert n == node  # each link leaves the node the previous one arrived at
            k, direction = divmod(rest, 2)
            c = torus.coords(node).copy()
            c[k] = (c[k] + (1 if direction == 0 else -1)) % torus.dims[k]
            nxt = torus.index(c)
            assert g.has_edge(tuple(torus.coords(node).tolist()), tuple(c.tolist()))
            node = nxt
        assert node == dst


def test_index_and_coords_are_row_major_inverses():
    torus = Torus((4, 4, 2, 2))
    assert torus.index([0, 0, 0, 1]) == 1 and torus.index([0, 0, 1, 0]) == 2
    np.testing.assert_array_equal(torus.index(torus.all_coords), np.arange(64))


def test_bad_dims_are_refused():
    with pytest.raises(ValueError, match="positive"):
        Torus((4, 0, 2, 2))
