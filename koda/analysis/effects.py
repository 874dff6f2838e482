"""What a piece of code does to the recurrence: its non-recursive cost and its self-calls.

Sequencing adds calls and keeps the larger cost. Mutually exclusive branches keep the
calls of the branch that dominates (binary search recurses on one half, not both);
branches that recurse in ways neither dominates are undecided, since the worst case then
depends on which branch the data picks at each level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from koda.analysis.symbolic import EPS, ONE, Growth, Undecided


@dataclass(frozen=True, order=True)
class Call:
    """One recursive call on size b * n + h."""

    b: float
    h: float

    @property
    def divides(self) -> bool:
        return self.b < 1 - EPS

    def text(self) -> str:
        if not self.divides:
            return "T(n)" if abs(self.h) < EPS else f"T(n{self.h:+g})"
        frac = Fraction(self.b).limit_denominator(16)
        if abs(float(frac) - self.b) < 1e-9:
            core = f"n/{frac.denominator}" if frac.numerator == 1 else f"{frac.numerator}n/{frac.denominator}"
        else:
            core = f"{self.b:.4g}n"
        return f"T({core}{self.h:+g})" if abs(self.h) > EPS else f"T({core})"


@dataclass
class Effect:
    cost: Growth = ONE
    calls: list[Call] = field(default_factory=list)

    def then(self, other: Effect) -> None:
        """Append ``other`` (code that runs after this) in place."""
        self.cost = self.cost + other.cost
        self.calls.extend(other.calls)

    def repeated(self, trips: Growth, count: int | None) -> Effect:
        """This effect as a loop body run ``trips`` (= ``count`` when a known constant) times."""
        if self.calls and count is None:
            raise Undecided("recursive call inside a loop whose trip count is not a constant")
        return Effect(trips * self.cost, self.calls * (count if self.calls else 1))


def dominates(a: list[Call], b: list[Call]) -> bool:
    """Every call of ``b`` can be matched to a distinct call of ``a`` on at least its size."""
    if len(a) < len(b):
        return False
    big, small = sorted(a, reverse=True), sorted(b, reverse=True)
    return all(x.b > y.b + EPS or (abs(x.b - y.b) <= EPS and x.h >= y.h - EPS)
               for x, y in zip(big, small, strict=False))


def either(a: Effect, b: Effect, parity: bool = False) -> Effect:
    """The worst case of two mutually exclusive branches.

    ``parity``: the branches split on n being odd or even. Then one branch taking T(n-1)
    makes n even, and the next call takes the other branch: T(n) <= T_even(n - 1) + O(1).
    That is how fast exponentiation with ``x * power(x, n - 1)`` stays logarithmic.
    """
    cost = a.cost + b.cost
    if parity:
        for one, other in ((a, b), (b, a)):
            if one.calls == [Call(1.0, -1.0)] and other.calls and all(c.divides for c in other.calls):
                return Effect(cost, [Call(c.b, c.h - c.b) for c in other.calls])
    if dominates(a.calls, b.calls):
        return Effect(cost, list(a.calls))
    if dominates(b.calls, a.calls):
        return Effect(cost, list(b.calls))
    shown = lambda e: " + ".join(c.text() for c in e.calls)
    raise Undecided(f"branches recurse differently ({shown(a)} vs {shown(b)}); the data picks the worst case")
