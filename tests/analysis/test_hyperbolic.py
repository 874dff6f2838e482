import ast
import math

import networkx as nx
import pytest
import torch

from koda.analysis.graphs import ast_graph
from koda.analysis.hyperbolic import (
    distortion,
    embed_tree,
    pairwise_distance,
    poincare_distance,
    program_distance,
)


@pytest.mark.parametrize("r", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_distance_from_origin_is_twice_artanh(r):
    x = torch.tensor([r * 0.6, r * 0.8], dtype=torch.float64)
    d = poincare_distance(torch.zeros(2, dtype=torch.float64), x)
    assert float(d) == pytest.approx(2 * math.atanh(r), abs=1e-9)


def test_distance_is_a_symmetric_mobius_invariant_metric():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(20, 2, generator=g, dtype=torch.float64) * 1.2 - 0.6
    d = pairwise_distance(pts, pts)
    assert torch.allclose(d, d.T) and torch.allclose(torch.diagonal(d), torch.zeros(20, dtype=torch.float64))
    assert (d[:, :, None] <= d[:, None, :] + d.T[None, :, :] + 1e-9).all()  # triangle inequality
    # the automorphism z -> (z - a) / (1 - conj(a) z) preserves distances
    a = complex(0.3, -0.2)
    z = torch.complex(pts[:, 0], pts[:, 1])
    w = (z - a) / (1 - complex(a.real, -a.imag) * z)
    moved = torch.stack([w.real, w.imag], dim=1)
    assert torch.allclose(pairwise_distance(moved, moved), d, atol=1e-9)


def test_sarkar_embedding_puts_every_edge_at_length_tau():
    tree = nx.balanced_tree(3, 4)
    emb = embed_tree(tree, tau=3.0)
    assert (emb.points.norm(dim=1) < 1).all()
    for u, v in tree.edges:
        assert float(poincare_distance(emb.points[u], emb.points[v])) == pytest.approx(3.0, abs=1e-6)
    assert distortion(emb, tree) < 1.6  # near-isometric for a generous tau


def test_program_distance_orders_similar_before_different():
    def emb(src):
        return embed_tree(ast_graph(ast.parse(src)), tau=3.0)

    a = emb("def f(n):\n    return n + 1\n")
    b = emb("def f(n):\n    return n * 1\n")
    c = emb("def g(xs):\n    for x in xs:\n        print(x)\n    return 0\n")
    assert program_distance(a, a) == 0.0
    assert program_distance(a, b) == pytest.approx(program_distance(b, a))
    assert 0 < program_distance(a, b) < program_distance(a, c)


def test_embedding_refuses_graphs_with_cycles():
    with pytest.raises(ValueError):
        embed_tree(nx.cycle_graph(4))
