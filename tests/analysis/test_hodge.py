import networkx as nx
import pytest
import torch

from koda.analysis.hodge import betti, boundary_matrices, clique_complex


def _filled_triangles_apart():
    return nx.disjoint_union(nx.complete_graph(3), nx.complete_graph(3))


def _figure_eight():
    g = nx.cycle_graph(4)
    nx.add_cycle(g, [0, 4, 5, 6])  # a second square through vertex 0
    return g


@pytest.mark.parametrize(
    ("graph", "b0", "b1"),
    [
        (nx.cycle_graph(5), 1, 1),
        (nx.cycle_graph(3), 1, 0),  # a triangle is filled in the clique complex
        (_filled_triangles_apart(), 2, 0),
        (_figure_eight(), 1, 2),
        (nx.complete_graph(4), 1, 0),
        (nx.grid_2d_graph(4, 5), 1, 12),  # (rows-1)(cols-1) square holes
        (nx.balanced_tree(2, 3), 1, 0),
        (nx.octahedral_graph(), 1, 0),
        (nx.disjoint_union(nx.cycle_graph(6), nx.path_graph(2)), 2, 1),
    ],
)
def test_betti_numbers_of_known_shapes(graph, b0, b1):
    out = betti(nx.convert_node_labels_to_integers(graph))
    assert (out["beta0"], out["beta1"]) == (b0, b1)
    assert out["consistent"] is True and out["kernel_dims"] == [b0, b1]


def test_boundary_of_boundary_is_zero_and_shapes():
    cx = clique_complex(nx.complete_graph(5))
    b1, b2 = boundary_matrices(cx)
    assert b1.shape == (5, 10) and b2.shape == (10, 10)
    assert torch.count_nonzero(b1 @ b2) == 0


def test_euler_characteristic_matches_betti_of_a_surface_free_complex():
    g = nx.grid_2d_graph(3, 3)
    g.add_edges_from([((0, 0), (1, 1))])  # one diagonal: two triangles fill one square
    out = betti(nx.convert_node_labels_to_integers(g))
    assert out["triangles"] == 2 and out["beta1"] == 3
    assert out["euler_characteristic"] == out["beta0"] - out["beta1"]  # no 2-cycles here
