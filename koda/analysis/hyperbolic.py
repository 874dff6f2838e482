"""Poincaré-disk embeddings of syntax trees and a distance between two programs.

Trees embed in hyperbolic space with little distortion because the disk's circumference
grows exponentially with radius, like a tree's level sizes. We use Sarkar's constructive
embedding (Sarkar 2011, "Low distortion Delaunay embedding of trees in hyperbolic plane"),
not a learned one: it is deterministic, needs no optimiser, and puts every tree edge at
hyperbolic length exactly ``tau``. The root sits at the origin; each node is moved to the
origin by a Möbius map, its children are spread at equal angles around the direction of
its parent, and the map is undone.

Edge length: siblings sit at angle 2 pi / deg around their parent, and their distance is
about 2 tau + 2 ln sin(pi / deg); ``tau`` must grow like 2 ln(deg) for siblings to stay
apart (Sarkar's scaling argument), so the default is 2 ln(max degree) + 1.
Precision: a node at tree depth D lands at hyperbolic radius about tau * D, i.e. Euclidean
1 - |z| ~ 2 exp(-tau * D). Float64 resolves that down to ~1e-16, so ``tau`` is capped at
``RADIUS_BUDGET / depth``; deep, wide trees get shorter edges and more distortion, which
``distortion`` measures (about 1.4 for a 15-line function, tens for a 300-line module).
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

import networkx as nx
import torch

RADIUS_BUDGET = 32.0  # largest hyperbolic radius float64 keeps accurate (1 - |z| ~ 2.5e-14)


def poincare_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d_H(x, y) = arcosh(1 + 2|x-y|^2 / ((1-|x|^2)(1-|y|^2))); x, y: (..., d) -> (...).

    1 - |x|^2 is formed as (1-|x|)(1+|x|) to keep the digits that matter near the boundary.
    """
    nx_, ny_ = x.norm(dim=-1), y.norm(dim=-1)
    num = 2.0 * ((x - y) ** 2).sum(dim=-1)
    den = (1 - nx_) * (1 + nx_) * (1 - ny_) * (1 + ny_)
    return torch.acosh(1.0 + num / den)


def pairwise_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x: (N, d), y: (M, d) -> (N, M) hyperbolic distances."""
    return poincare_distance(x[:, None, :], y[None, :, :])


@dataclass(frozen=True)
class TreeEmbedding:
    points: torch.Tensor  # (V, 2) float64, row i = vertex i of the tree
    labels: list[str]  # AST node type per vertex
    tau: float  # hyperbolic length of every tree edge
    depth: int


def _mobius(z: complex, a: complex) -> complex:
    """The disk automorphism sending a to 0."""
    return (z - a) / (1 - a.conjugate() * z)


def _mobius_inv(w: complex, a: complex) -> complex:
    return (w + a) / (1 + a.conjugate() * w)


def embed_tree(tree: nx.Graph, root: int = 0, tau: float | None = None) -> TreeEmbedding:
    """Sarkar embedding of a tree (e.g. ``graphs.ast_graph``) into the Poincaré disk.

    Children are placed in vertex-id order, so equal trees get equal coordinates and
    programs that share a prefix of structure share coordinates: that makes the
    nearest-neighbour distance of ``program_distance`` meaningful across programs.
    """
    if not nx.is_tree(tree):
        raise ValueError("embed_tree needs a tree (use graphs.ast_graph, not program_graph)")
    depths = nx.single_source_shortest_path_length(tree, root)
    depth = max(depths.values())
    if tau is None:
        widest = max((d for _, d in tree.degree()), default=1)
        tau = min(2.0 * math.log(max(widest, 2)) + 1.0, RADIUS_BUDGET / max(depth, 1))
    radius = math.tanh(tau / 2)  # Euclidean radius of hyperbolic distance tau from 0
    z: dict[int, complex] = {root: 0j}
    parent: dict[int, int | None] = {root: None}
    order = [root]
    for node in order:  # breadth-first: a node's position exists before its children's
        children = sorted(c for c in tree.neighbors(node) if c != parent[node])
        if not children:
            continue
        x = z[node]
        if parent[node] is None:
            start, slots = 0.0, len(children)
            angles = [start + 2 * math.pi * i / slots for i in range(slots)]
        else:
            start, slots = cmath.phase(_mobius(z[parent[node]], x)), len(children) + 1
            angles = [start + 2 * math.pi * i / slots for i in range(1, slots)]
        for child, angle in zip(children, angles, strict=True):
            z[child] = _mobius_inv(cmath.rect(radius, angle), x)
            parent[child] = node
            order.append(child)
    verts = sorted(tree.nodes)
    pts = torch.tensor([[z[v].real, z[v].imag] for v in verts], dtype=torch.float64)
    labels = [tree.nodes[v].get("type", "") for v in verts]
    return TreeEmbedding(pts, labels, tau, depth)


def distortion(emb: TreeEmbedding, tree: nx.Graph, sample: int = 200) -> float:
    """max/min over vertex pairs of d_H / (tau * tree distance); 1.0 is isometric."""
    verts = sorted(tree.nodes)[:sample]
    ratios = []
    for i, u in enumerate(verts):
        hops = nx.single_source_shortest_path_length(tree, u)
        for v in verts[i + 1 :]:
            d = float(poincare_distance(emb.points[u], emb.points[v]))
            ratios.append(d / (emb.tau * hops[v]))
    return max(ratios) / min(ratios) if ratios else 1.0


def program_distance(a: TreeEmbedding, b: TreeEmbedding) -> float:
    """Symmetric mean nearest-neighbour (Chamfer) distance between two embedded trees.

    A node is matched to its hyperbolically nearest node of the other tree, with one edge
    length ``tau`` added when the AST node types differ, so equal shapes with different
    operations still count as different. Both embeddings should share ``tau``.
    """
    cost = pairwise_distance(a.points, b.points)  # (Va, Vb)
    la = {t: i for i, t in enumerate(sorted(set(a.labels) | set(b.labels)))}
    ta = torch.tensor([la[t] for t in a.labels])
    tb = torch.tensor([la[t] for t in b.labels])
    cost = cost + max(a.tau, b.tau) * (ta[:, None] != tb[None, :]).double()
    return 0.5 * float(cost.min(dim=1).values.mean() + cost.min(dim=0).values.mean())
