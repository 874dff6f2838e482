"""Egress-port queue depth as an Ornstein-Uhlenbeck process, and the seed's path latency over it.

The queue depth Q (bytes waiting at a port) follows dQ = -theta (Q - mu) dt + sigma dW: it is
pulled back to its mean mu at rate theta and shaken by white noise of scale sigma. Its
stationary law is normal with mean mu and variance sigma^2 / (2 theta), which the tests check.

Two discretisations on a grid of step dt:

* ``exact`` (default): the OU transition density is known in closed form, so
  Q[k+1] = mu + (Q[k] - mu) e^{-theta dt} + sigma sqrt((1 - e^{-2 theta dt}) / (2 theta)) Z[k]
  samples the continuous process at the grid points without discretisation error, at any dt.
* ``euler`` (Euler-Maruyama): Q[k+1] = Q[k] - theta (Q[k] - mu) dt + sigma sqrt(dt) Z[k].
  First-order; its stationary variance is sigma^2 dt / (1 - (1 - theta dt)^2), which tends to
  sigma^2 / (2 theta) only as theta dt -> 0, and it diverges for theta dt >= 2.

A real queue cannot go negative; the Gaussian OU can. We keep the process as the seeds state it
(so the moments stay checkable) and clip at zero only where a depth is turned into a delay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("exact", "euler")


@dataclass(frozen=True)
class OUQueue:
    """Parameters of the queue-depth process: theta (1/s), mu (bytes), sigma (bytes/sqrt(s))."""

    theta: float
    mu: float
    sigma: float

    def __post_init__(self) -> None:
        if not self.theta > 0:
            raise ValueError(f"queue theta must be > 0, got {self.theta}")
        if not self.sigma >= 0:
            raise ValueError(f"queue sigma must be >= 0, got {self.sigma}")

    @property
    def stationary_var(self) -> float:
        return self.sigma**2 / (2.0 * self.theta)

    def quantile(self, p: float) -> float:
        """Stationary p-quantile of the depth (normal law), e.g. p = 0.99 for a busy port."""
        from scipy.stats import norm

        return float(self.mu + norm.ppf(p) * np.sqrt(self.stationary_var))

    def simulate(
        self,
        steps: int,
        dt: float,
        *,
        seed: int = 0,
        q0: float | None = None,
        paths: int = 1,
        scheme: str = "exact",
    ) -> np.ndarray:
        """Simulate ``paths`` independent queues for ``steps`` steps of ``dt`` seconds.

        Returns ``[paths, steps + 1]`` depths including the start ``q0`` (default mu). Seeded
        with numpy's PCG64 so a given seed gives the same paths on every machine.
        """
        if scheme not in SCHEMES:
            raise ValueError(f"queue scheme must be one of {SCHEMES}, got {scheme!r}")
        if steps < 0 or not dt > 0:
            raise ValueError(f"need steps >= 0 and dt > 0, got steps={steps}, dt={dt}")
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((paths, steps))
        if scheme == "exact":
            a = np.exp(-self.theta * dt)
            b = self.sigma * np.sqrt(-np.expm1(-2.0 * self.theta * dt) / (2.0 * self.theta))
        else:
            a = 1.0 - self.theta * dt
            b = self.sigma * np.sqrt(dt)
        q = np.empty((paths, steps + 1))
        q[:, 0] = self.mu if q0 is None else q0
        # The recursion is linear, so run it on the deviation from mu: x[k+1] = a x[k] + b z[k].
        x = q[:, 0] - self.mu
        for k in range(steps):
            x = a * x + b * z[:, k]
            q[:, k + 1] = x
        q[:, 1:] += self.mu
        return q


def path_latency_terms(q: np.ndarray, dt: float, bandwidth: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The two terms of the seeds' L_path = integral over [t0, tf] of (Q_p(t)/B + sigma dQ_p/dt) dt.

    ``q`` is ``[paths, steps + 1]`` from :meth:`OUQueue.simulate`. Returns ``(queue_term,
    drift_term)``, each ``[paths]``. Discretisation:

    * queue term, integral of Q/B: trapezoidal rule on the simulation grid, with Q clipped at 0
      (a queue holds no negative bytes). With Q in bytes and B in bytes/s, Q/B is the delay a
      packet finds (s), and the term is that delay integrated over the window (s^2): divide by
      (tf - t0) for the mean queueing delay, which tends to mu/B.
    * drift term, integral of sigma dQ/dt: an OU path has no derivative, but the integral of dQ
      over the window is the increment Q(tf) - Q(t0) (a Stieltjes integral of 1), so the term is
      exactly sigma (Q(tf) - Q(t0)), free of step-size error. Its mean is 0 in the stationary
      regime. The seeds' units do not match the first term (sigma is bytes/sqrt(s)); we compute
      it as written and report it separately rather than add it into a delay.
    """
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    qc = np.clip(q, 0.0, None)
    queue_term = dt * (0.5 * (qc[:, 0] + qc[:, -1]) + qc[:, 1:-1].sum(axis=1)) / bandwidth
    drift_term = sigma * (q[:, -1] - q[:, 0])
    return queue_term, drift_term


def path_latency(q: np.ndarray, dt: float, bandwidth: float, sigma: float) -> np.ndarray:
    """L_path per path exactly as the seeds write it: the sum of :func:`path_latency_terms`.

    A route over several egress ports is several rows of ``q``: add their L_path values.
    """
    queue_term, drift_term = path_latency_terms(q, dt, bandwidth, sigma)
    return queue_term + drift_term
