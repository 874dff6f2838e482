"""Graph Laplacian spectra and the summary figures the judge reports.

Eigenvalues come from ``torch.linalg.eigvalsh`` on the dense symmetric Laplacian in float64:
program graphs of single functions have hundreds of vertices, where a dense solve is exact
and fast; ``MAX_VERTICES`` refuses graphs where an O(V^3) solve would stall a reward batch.
"""

from __future__ import annotations

from contextlib import contextmanager

import networkx as nx
import torch

from koda.errors import KodaError

MAX_VERTICES = 4000
ZERO_TOL = 1e-8  # eigenvalues below this count as zero (integer Laplacians, float64 solve)


@contextmanager
def one_thread():
    """Run small dense LAPACK calls on one thread, restoring the caller's setting after.

    These matrices are a few hundred rows; on a shared CPU busy with sandbox workers or a
    trainer, OpenMP threads spin against each other: a 381x445 SVD took 1.9 s with two
    threads and 0.05 s with one on the project's loaded 2-core machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def laplacian(graph: nx.Graph, normalized: bool = False) -> torch.Tensor:
    """L = D - A, or I - D^-1/2 A D^-1/2 when ``normalized``; shape (V, V), float64.

    Vertices are ordered by ``sorted(graph.nodes)``; isolated vertices keep a zero row in
    the normalised form (the usual convention), so each component still adds one zero.
    """
    nodes = sorted(graph.nodes)
    if len(nodes) > MAX_VERTICES:
        raise KodaError(f"graph has {len(nodes)} vertices, more than the {MAX_VERTICES} the spectrum allows")
    pos = {v: i for i, v in enumerate(nodes)}
    adj = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
    for u, v in graph.edges:
        if u != v:
            adj[pos[u], pos[v]] = adj[pos[v], pos[u]] = 1.0
    deg = adj.sum(dim=1)
    if not normalized:
        return torch.diag(deg) - adj
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300).rsqrt(), torch.zeros_like(deg))
    return torch.diag((deg > 0).double()) - inv_sqrt[:, None] * adj * inv_sqrt[None, :]


def spectrum(graph: nx.Graph, normalized: bool = False) -> torch.Tensor:
    """Eigenvalues of the (normalised) Laplacian in ascending order; shape (V,)."""
    if graph.number_of_nodes() == 0:
        return torch.zeros(0, dtype=torch.float64)
    with one_thread():
        return torch.linalg.eigvalsh(laplacian(graph, normalized))


def summary(graph: nx.Graph) -> dict:
    """Scalar figures of the spectrum, for rewards and dataset checks.

    - ``algebraic_connectivity``: lambda_2 of L (Fiedler value); 0 exactly when disconnected.
    - ``spectral_gap``: lambda_2 of the normalised Laplacian, a size-free version of the same
      (random-walk mixing), comparable across programs of different length.
    - ``spectral_radius``: lambda_max of L, bounded by twice the maximum degree.
    - ``components``: multiplicity of the zero eigenvalue.
    """
    lam = spectrum(graph)
    n = int(lam.numel())
    if n == 0:
        return {"vertices": 0, "edges": 0, "components": 0, "algebraic_connectivity": 0.0,
                "spectral_gap": 0.0, "spectral_radius": 0.0, "mean_eigenvalue": 0.0}
    norm = spectrum(graph, normalized=True)
    lam = torch.where(lam.abs() < ZERO_TOL, torch.zeros_like(lam), lam)
    norm = torch.where(norm.abs() < ZERO_TOL, torch.zeros_like(norm), norm)
    return {
        "vertices": n,
        "edges": graph.number_of_edges(),
        "components": int((lam == 0).sum()),
        "algebraic_connectivity": float(lam[1]) if n > 1 else 0.0,
        "spectral_gap": float(norm[1]) if n > 1 else 0.0,
        "spectral_radius": float(lam[-1]),
        "mean_eigenvalue": float(lam.mean()),  # = 2E/V, the mean degree
    }
