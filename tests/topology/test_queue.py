"""The OU queue converges to its stationary law; the path-latency integral is discretised as documented."""

import numpy as np
import pytest

from koda.topology.queue import OUQueue, path_latency, path_latency_terms


@pytest.mark.parametrize("scheme", ["exact", "euler"])
def test_ou_mean_and_variance_converge_to_mu_and_sigma2_over_2theta(scheme):
    ou = OUQueue(theta=2.0, mu=5.0, sigma=1.5)
    dt = 0.01 if scheme == "exact" else 0.001  # Euler is biased by O(theta dt); keep it small
    q = ou.simulate(20000, dt, seed=1, paths=64, q0=0.0, scheme=scheme)
    tail = q[:, 5000:]  # after 5000 dt >> 1/theta the start is forgotten
    assert tail.mean() == pytest.approx(ou.mu, abs=0.05)
    assert tail.var() == pytest.approx(ou.stationary_var, rel=0.05)


def test_exact_scheme_is_exact_at_any_step_size():
    # One huge step: the exact transition gives the stationary law, Euler would blow up.
    ou = OUQueue(theta=3.0, mu=-1.0, sigma=0.7)
    q = ou.simulate(1, 10.0, seed=2, paths=200000, q0=50.0)[:, 1]
    assert q.mean() == pytest.approx(-1.0, abs=0.01)
    assert q.var() == pytest.approx(ou.stationary_var, rel=0.02)


def test_simulation_is_seeded():
    ou = OUQueue(1.0, 0.0, 1.0)
    np.testing.assert_array_equal(ou.simulate(50, 0.1, seed=7), ou.simulate(50, 0.1, seed=7))
    assert not np.array_equal(ou.simulate(50, 0.1, seed=7), ou.simulate(50, 0.1, seed=8))


def test_path_latency_terms():
    q = np.array([[1.0, 3.0, -2.0, 5.0]])  # negative depth clips to 0 in the queue term
    queue_term, drift = path_latency_terms(q, dt=0.5, bandwidth=2.0, sigma=0.1)
    assert queue_term[0] == pytest.approx(0.5 * (0.5 * (1 + 5) + 3 + 0) / 2.0)
    assert drift[0] == pytest.approx(0.1 * (5.0 - 1.0))  # sigma * integral of dQ, exactly
    assert path_latency(q, 0.5, 2.0, 0.1)[0] == pytest.approx(queue_term[0] + drift[0])


def test_mean_queueing_delay_tends_to_mu_over_b():
    ou = OUQueue(theta=1000.0, mu=65536.0, sigma=1.4654e6)
    q = ou.simulate(20000, 1e-5, seed=0, paths=16)
    queue_term, _ = path_latency_terms(q, 1e-5, 2.5e10, ou.sigma)
    assert queue_term.mean() / 0.2 == pytest.approx(65536.0 / 2.5e10, rel=0.03)


def test_bad_parameters():
    with pytest.raises(ValueError, match="theta"):
        OUQueue(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="scheme"):
        OUQueue(1.0, 1.0, 1.0).simulate(3, 0.1, scheme="milstein")
