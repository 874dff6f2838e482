"""The abstract domain of the recurrence extractor: affine sizes, growth classes, values.

A program's sizes are tracked as affine forms over parameter symbols (``n``, ``len(xs)``,
``hi`` and ``lo``): that is exactly what is needed to read ``xs[:len(xs)//2]`` or
``(lo + hi) // 2`` as "half of the input". Floors and ceilings are dropped (``n // 2`` is
``n / 2``): Akra-Bazzi allows perturbations of O(n / log^2 n), which covers them.
Costs are growth classes n^k log^j n, combined by max (sequencing) and product (loops).
Anything outside the domain raises ``Undecided`` with a reason: the extractor never
guesses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-9


class Undecided(Exception):  # noqa: N818 - a verdict, not a failure of the tool
    """The code leaves the recurrence undetermined; ``str(err)`` is the reason."""


class WrongMeasure(Undecided):  # noqa: N818
    """Undecided under this choice of n; another parameter may still measure the input."""


@dataclass(frozen=True)
class Affine:
    """const + sum(coef * symbol); symbols are parameter names or ``len(name)``."""

    coefs: tuple[tuple[str, float], ...] = ()
    const: float = 0.0

    @staticmethod
    def symbol(name: str) -> Affine:
        return Affine(((name, 1.0),), 0.0)

    @staticmethod
    def constant(value: float) -> Affine:
        return Affine((), float(value))

    @staticmethod
    def _make(coefs: dict[str, float], const: float) -> Affine:
        return Affine(tuple(sorted((s, c) for s, c in coefs.items() if abs(c) > EPS)), const)

    def __add__(self, other: Affine) -> Affine:
        coefs = dict(self.coefs)
        for s, c in other.coefs:
            coefs[s] = coefs.get(s, 0.0) + c
        return Affine._make(coefs, self.const + other.const)

    def scale(self, k: float) -> Affine:
        return Affine._make({s: c * k for s, c in self.coefs}, self.const * k)

    def __sub__(self, other: Affine) -> Affine:
        return self + other.scale(-1.0)

    @property
    def is_const(self) -> bool:
        return not self.coefs

    def ratio_to(self, measure: Affine) -> float | None:
        """b when self = b * measure + const (same symbols, same proportions), else None."""
        if not measure.coefs:
            return None
        if self.is_const:
            return 0.0
        mine, theirs = dict(self.coefs), dict(measure.coefs)
        if set(mine) != set(theirs):
            return None
        ratios = {mine[s] / theirs[s] for s in theirs}
        b = next(iter(ratios))
        return b if all(abs(r - b) < EPS for r in ratios) else None

    def substitute(self, values: dict[str, Affine]) -> Affine:
        out = Affine.constant(self.const)
        for s, c in self.coefs:
            out = out + values[s].scale(c)
        return out

    def __str__(self) -> str:
        terms = [(c, s) for s, c in self.coefs]
        if abs(self.const) > EPS or not terms:
            terms.append((self.const, ""))
        out = ""
        for i, (c, s) in enumerate(terms):
            mag = abs(c)
            body = s if s and abs(mag - 1) < EPS else f"{mag:g}*{s}" if s else f"{mag:g}"
            out += ("-" if c < 0 else "") + body if i == 0 else (" - " if c < 0 else " + ") + body
        return out


@dataclass(frozen=True, order=True)
class Growth:
    """Theta(n^k log^j n); ordered by growth. ``+`` is the larger term, ``*`` the product."""

    k: float = 0.0
    j: int = 0

    def __add__(self, other: Growth) -> Growth:
        return max(self, other)

    def __mul__(self, other: Growth) -> Growth:
        return Growth(self.k + other.k, self.j + other.j)

    def __str__(self) -> str:
        return polylog_text(self.k, self.j)


ONE = Growth(0.0, 0)
LINEAR = Growth(1.0, 0)


def polylog_text(k: float, j: int) -> str:
    """'1', 'log n', 'n', 'n^2 log n', 'n^1.585', 'log^2 n'."""
    parts = []
    if abs(k) > EPS:
        kk = round(k)
        parts.append("n" if abs(k - 1) < EPS else f"n^{kk}" if abs(k - kk) < EPS else f"n^{k:.3f}")
    if j:
        parts.append("log n" if j == 1 else f"log^{j} n")
    return " ".join(parts) or "1"


def growth_of(form: Affine, measure: Affine, what: str) -> Growth:
    """The growth class of a size-valued form in terms of the measure n.

    Exact multiples of the measure are n; constants are 1. A form that only adds up
    non-negative sizes the measure also adds up (``len(xs)`` when n = len(xs) + len(ys))
    is bounded by n and counts as n. Anything else depends on something other than n.
    """
    b = form.ratio_to(measure)
    if b is not None:
        if b > EPS:
            return LINEAR
        if abs(b) <= EPS:
            return ONE
    mcoefs = dict(measure.coefs)
    if form.coefs and all(s in mcoefs and c > 0 and mcoefs[s] > 0 for s, c in form.coefs):
        return LINEAR
    raise WrongMeasure(f"{what} depends on {form}, not on the size n = {measure}")


def sqrt_growth(g: Growth, what: str) -> Growth:
    if g.j:
        raise Undecided(f"{what}: square root of a logarithmic size")
    return Growth(g.k / 2, 0)


def log_growth(g: Growth, what: str) -> Growth:
    """log of Θ(n^k log^j n) is Θ(log n) for k > 0, O(1) for a constant; log log n is refused."""
    if g.k > EPS:
        return Growth(0.0, 1)
    if g.j:
        raise Undecided(f"{what}: a logarithm of a logarithm (log log n) is outside the growth classes")
    return Growth(0.0, 0)


# ---- abstract values -------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A number; ``form`` when it is an affine function of the parameters.

    ``lower`` is a lower bound when the exact form is lost, e.g. for a counter that a loop
    only ever increments (``i`` after ``while i < len(a) and j < len(b)``).
    """

    form: Affine | None = None
    lower: Affine | None = None
    growth: Growth | None = None  # Θ-size in n when no affine form exists (isqrt(n), n.bit_length())


@dataclass(frozen=True)
class Seq:
    """A list/tuple/str/range whose length is ``length`` (None: unknown).

    ``upto`` marks a length that is only an upper bound (filtered comprehensions, lists
    grown in loops, results of recursive calls); fine for costs, refused as a call size.
    """

    length: Affine | None
    elem: object = field(default_factory=Num)
    upto: bool = False
    items: tuple | None = None  # element values of a literal tuple/list, for unpacking
    size: Growth | None = None  # Θ-length in n when no affine length exists (range(isqrt(n)))


@dataclass(frozen=True)
class Dual:
    """A value whose kind the code decides: a number in arithmetic, a sequence otherwise.

    Used for elements of list parameters (rows of a matrix are taken to be as long as the
    matrix) and for results of recursive calls (a call on m items is taken to return O(m)
    items, hence ``upto``). ``note`` names the assumption; the report lists it only when
    the value was used as a sequence. Its elements are ``Dual`` again, with ``row_note``.
    """

    length: Affine
    note: str
    upto: bool = False
    row_note: str = ""


@dataclass(frozen=True)
class Other:
    """An object outside the domain (None, a dict, a module): O(1) to pass around."""

    what: str = "object"


Value = Num | Seq | Dual | Other


def join(a: Value, b: Value) -> Value:
    """The value of a variable after two branches assigned it ``a`` and ``b``."""
    if a == b:
        return a
    if isinstance(a, Seq) and isinstance(b, Seq):
        return Seq(a.length if a.length == b.length else None, join(a.elem, b.elem), True)
    if isinstance(a, Num) and isinstance(b, Num):
        return Num()
    return Other("value of several kinds")
