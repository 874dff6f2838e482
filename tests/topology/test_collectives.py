"""Collective-cost sanity: closed forms on a ring, monotone in size, contention counted."""

import numpy as np
import pytest

from koda.topology.collectives import collective_time, hop_stats, ring_all_reduce_closed_form
from koda.topology.latency import LinkModel
from koda.topology.torus import Torus

LINK = LinkModel(alpha=5e-6, beta=1e-7, gamma=4e-11, bandwidth=2.5e10)


@pytest.mark.parametrize("p", [2, 3, 5, 8, 16])
def test_ring_all_reduce_on_1d_ring_matches_the_textbook_formula(p):
    torus = Torus((p,))
    group = np.arange(p)[None, :]
    t = collective_time(torus, LINK, group, "all_reduce", 1e8, queue=65536.0)[0]
    assert t == pytest.approx(ring_all_reduce_closed_form(p, 1e8, LINK, 65536.0), rel=1e-12)


def test_all_gather_is_half_an_all_reduce_and_equals_reduce_scatter():
    torus, group = Torus((8,)), np.arange(8)[None, :]
    ar, ag, rs = (
        collective_time(torus, LINK, group, k, 4e7)[0] for k in ("all_reduce", "all_gather", "reduce_scatter")
    )
    assert ag == pytest.approx(ar / 2) and rs == pytest.approx(ag)


@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"])
def test_cost_is_monotone_in_message_size_and_zero_for_one_rank(kind):
    torus = Torus((4, 4, 2, 2))
    groups = np.random.default_rng(0).permutation(64).reshape(8, 8)
    times = [collective_time(torus, LINK, groups, kind, n).max() for n in (0, 1e3, 1e6, 1e8, 1e10)]
    assert times[0] == 0 and all(a < b for a, b in zip(times, times[1:], strict=False))
    assert collective_time(torus, LINK, groups[:, :1], kind, 1e8).max() == 0


def test_shared_links_slow_concurrent_groups():
    # Two 2-rank groups on a 4-ring. Interleaved (0,2) and (1,3) both cross link 1->2 going "+";
    # adjacent (0,1) and (2,3) use disjoint links.
    torus = Torus((4,))
    interleaved = collective_time(torus, LINK, np.array([[0, 2], [1, 3]]), "all_gather", 1e9)
    adjacent = collective_time(torus, LINK, np.array([[0, 1], [2, 3]]), "all_gather", 1e9)
    assert interleaved.max() > 1.5 * adjacent.max()


def test_same_host_ranks_cost_alpha_and_bytes_only():
    torus = Torus((4,))
    t = collective_time(torus, LINK, np.array([[2, 2]]), "all_to_all", 1e6)[0]
    assert t == pytest.approx(LINK.alpha + 0.5e6 / LINK.bandwidth)


def test_l_mem_is_alpha_plus_beta_d_plus_gamma_q():
    assert LINK.l_mem(3, 1000.0) == pytest.approx(5e-6 + 3e-7 + 4e-8)
    assert LINK.l_mem(0, 1000.0) == pytest.approx(5e-6)


def test_hop_stats():
    torus = Torus((4, 4, 2, 2))
    cube = torus.index(
        np.array(
            [[0, 0, c, d] for c in range(2) for d in range(2)] + [[0, 1, c, d] for c in range(2) for d in range(2)]
        )
    )
    mean, mx = hop_stats(torus, cube[None, :])
    assert mean[0] == pytest.approx(12 / 7) and mx[0] == 3
