"""What a task family is: a seeded maker of function-writing task drafts.

A family draws everything that varies between its instances from the ``random.Random`` it
is given: the function and argument names, the docstring's wording, and the constants
that change the computation (bases, moduli, coefficients, split ratios). Names and wording
alone never make two instances different (the splits are compared with identifiers
renamed and docstrings dropped, see ``koda.tasks.build.normal_form``), so every family
also varies at least one constant or structural choice.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Draft:
    """One task before its tests are computed.

    body: the reference solution's body, indented four spaces (HumanEval's
    ``canonical_solution``: the prompt ends at the docstring); cases: argument tuples the
    hidden tests call the entry point with, edge cases first; target: the Θ-bound the
    reference has, in ``koda verify``'s ``bound`` shape, or None where the family has none
    the verifier can check; preamble: imports the prompt starts with.
    """

    name: str
    params: tuple[str, ...]
    doc: str
    body: str
    cases: tuple[tuple, ...]
    target: dict | None = None
    preamble: str = ""

    def prompt(self) -> str:
        doc = "\n    ".join(textwrap.wrap(self.doc.strip(), 88))
        head = f"{self.preamble}\n\n" if self.preamble else ""
        return f'{head}def {self.name}({", ".join(self.params)}):\n    """{doc}\n    """\n'


@dataclass(frozen=True)
class Family:
    name: str
    style: str                      # "recursive" or "iterative": how the reference is written
    make: Callable[[random.Random], Draft]
    about: str                      # one line for the family table


def polylog(n_exponent: float, log_exponent: int = 0) -> dict:
    return {"kind": "polylog", "n_exponent": float(n_exponent), "log_exponent": int(log_exponent)}


def exponential(shifts: list[int]) -> dict:
    """Θ(r^n) for T(n) = sum_i T(n - shifts_i) + O(1): r is the largest real root of
    x^d = sum_i x^(d - shifts_i), found here with numpy's eigenvalue root finder."""
    d = max(shifts)
    coeffs = np.zeros(d + 1)
    coeffs[0] = 1.0
    for c in shifts:
        coeffs[c] -= 1.0
    roots = np.roots(coeffs)
    real = max(r.real for r in roots if abs(r.imag) < 1e-9)
    return {"kind": "exponential", "base": float(f"{real:.12g}")}


def pick(rng: random.Random, options):
    return options[rng.randrange(len(options))]


def ints(rng: random.Random, count: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(count)]


def indent(code: str, spaces: int = 4) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in code.splitlines(keepends=True))
