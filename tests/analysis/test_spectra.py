import math

import networkx as nx
import pytest
import torch

from koda.analysis.hodge import hodge_laplacians
from koda.analysis.spectra import laplacian, spectrum, summary


@pytest.mark.parametrize("graph", [nx.path_graph(7), nx.cycle_graph(9), nx.petersen_graph(),
                                   nx.grid_2d_graph(3, 4), nx.complete_graph(5)])
def test_hodge_delta0_equals_graph_laplacian(graph):
    graph = nx.convert_node_labels_to_integers(graph)
    delta0, _ = hodge_laplacians(graph)
    assert torch.equal(delta0, laplacian(graph))
    ref = torch.tensor(nx.laplacian_matrix(graph, nodelist=sorted(graph)).toarray(), dtype=torch.float64)
    assert torch.equal(delta0, ref)


def test_path_and_cycle_spectra_match_closed_forms():
    n = 8
    path = spectrum(nx.path_graph(n))
    assert torch.allclose(path, torch.tensor([2 - 2 * math.cos(math.pi * k / n) for k in range(n)],
                                             dtype=torch.float64), atol=1e-12)
    cyc = summary(nx.cycle_graph(n))
    assert cyc["algebraic_connectivity"] == pytest.approx(2 - 2 * math.cos(2 * math.pi / n))
    assert cyc["spectral_radius"] == pytest.approx(4.0)
    assert cyc["spectral_gap"] == pytest.approx(1 - math.cos(2 * math.pi / n))


def test_complete_graph_and_components():
    k5 = summary(nx.complete_graph(5))
    assert k5["algebraic_connectivity"] == pytest.approx(5.0)
    assert k5["components"] == 1 and k5["mean_eigenvalue"] == pytest.approx(4.0)
    two = summary(nx.disjoint_union(nx.path_graph(3), nx.cycle_graph(4)))
    assert two["components"] == 2 and two["algebraic_connectivity"] == 0.0
