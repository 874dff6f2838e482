"""Families over integers: sums, products, digits, gcd/lcm, powers, recurrences, bits.

Each maker takes a seeded ``random.Random`` and returns a ``Draft``; see ``family.py``.
Cases stay small enough for a recursive reference under CPython's default recursion limit.
"""

from __future__ import annotations

import random

from koda.tasks.family import Draft, Family, exponential, indent, pick, polylog

INT_NAMES = ("n", "m", "k", "num", "value", "limit", "top", "x")


def _primes(lo: int, hi: int) -> tuple[int, ...]:
    sieve = bytearray([1]) * hi
    sieve[:2] = b"\0\0"
    for i in range(2, int(hi ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(range(i * i, hi, i)))
    return tuple(i for i in range(lo, hi) if sieve[i])


# every prime in [89, 10^5) and four large ones: about 9,600 moduli, so a family whose only
# constant is its modulus (x^n mod m) still has thousands of distinct instances
MODULI = _primes(89, 100_000) + (131071, 524287, 1_000_003, 998_244_353, 1_000_000_007)


def _int_param(rng: random.Random, avoid: tuple[str, ...] = ()) -> str:
    return pick(rng, [p for p in INT_NAMES if p not in avoid])


def range_sum(rng: random.Random) -> Draft:
    a, b, s = rng.randint(1, 9), rng.randint(0, 9), rng.randint(1, 3)
    p = _int_param(rng)
    name = pick(rng, ("stepped_sum", "series_total", "sum_terms", "weighted_total", "accumulate"))
    term = f"{a} * i + {b}" if a > 1 else f"i + {b}"
    doc = pick(rng, (f"Return the sum of {term} over i = {p}, {p} - {s}, {p} - {2 * s}, ... while i > 0.",
                     f"Add up {term} for every positive i reached from {p} by steps of {s} downwards.",
                     f"Sum the terms {term}, for i starting at {p} and decreasing by {s}, as long as i is positive."))
    body = f"if {p} <= 0:\n    return 0\nreturn {term.replace('i', p)} + {name}({p} - {s})\n"
    cases = ((-2,), (0,), (1,), (s,), (7,), (20,), (57,))
    return Draft(name, (p,), doc, indent(body), cases, polylog(1))


def range_sum_loop(rng: random.Random) -> Draft:
    a, e, lo = rng.randint(1, 20), rng.randint(1, 3), rng.randint(0, 3)
    p = _int_param(rng)
    name = pick(rng, ("power_sum", "sum_of_powers", "total_powers", "scaled_power_sum"))
    term = f"{a} * i ** {e}" if a > 1 else f"i ** {e}"
    doc = pick(rng, (f"Return the sum of {term} for every integer i with {lo} <= i <= {p}.",
                     f"Compute {term} summed over i from {lo} up to and including {p} (0 when {p} < {lo})."))
    body = f"total = 0\nfor i in range({lo}, {p} + 1):\n    total += {term}\nreturn total\n"
    return Draft(name, (p,), doc, indent(body), ((0,), (lo,), (1,), (5,), (13,), (100,)), polylog(1))


def range_product(rng: random.Random) -> Draft:
    c, s, mod = rng.randint(0, 5), rng.randint(1, 3), pick(rng, MODULI)
    p = _int_param(rng)
    name = pick(rng, ("shifted_factorial", "stepped_product", "product_mod", "falling_product"))
    doc = pick(rng, (f"Return the product of (i + {c}) for i = {p}, {p} - {s}, ... while i > 0, modulo {mod}.",
                     f"Multiply i + {c} over the positive i reached from {p} in steps of {s}; answer modulo {mod}."))
    body = f"if {p} <= 0:\n    return 1\nreturn ({p} + {c}) * {name}({p} - {s}) % {mod}\n"
    return Draft(name, (p,), doc, indent(body), ((0,), (1,), (2,), (9,), (30,), (120,)), polylog(1))


def digit_sum(rng: random.Random) -> Draft:
    # bases up to 10: a base-16 digit count is a coarse staircase at the sizes measured (<= 2^20),
    # too coarse for the fit to tell log n from log^2 n
    base, e, c, k = rng.randint(2, 10), rng.randint(1, 3), rng.randint(0, 4), rng.randint(1, 4)
    p = _int_param(rng)
    name = pick(rng, ("digit_power_sum", "sum_digits", "digit_total", "base_digit_sum"))

    def term(d: str) -> str:  # k * (d + c) ** e, without the no-op parts
        inner = f"({d} + {c})" if c else d
        power = f"{inner} ** {e}" if e > 1 else inner
        return f"{k} * {power}" if k > 1 else (power if c or e > 1 else d)

    what = f"{term('d')} over the digits d"
    doc = pick(rng, (f"Return the sum of {what} of the non-negative integer {p} written in base {base}.",
                     f"Write {p} (>= 0) in base {base} and add up {what}."))
    body = f"if {p} < {base}:\n    return {term(p)}\nreturn {term(f'({p} % {base})')} + {name}({p} // {base})\n"
    cases = ((0,), (1,), (base - 1,), (base,), (12345,), (10**9 + 7,))
    return Draft(name, (p,), doc, indent(body), cases, polylog(0, 1))


def digit_count_loop(rng: random.Random) -> Draft:
    base = rng.randint(2, 12)
    d, w = rng.randint(1, base - 1), rng.randint(1, 5)
    p = _int_param(rng)
    name = pick(rng, ("count_digit", "digit_frequency", "occurrences_of_digit"))
    times = f"{w} times " if w > 1 else ""
    doc = pick(rng, (f"Return {times}how many digits of the non-negative integer {p}, written in base {base}, "
                     f"equal {d}.",
                     f"Count the base-{base} digits of {p} (>= 0) that are {d}, and return {times}that count."))
    body = (f"count = 0\nwhile {p} > 0:\n    if {p} % {base} == {d}:\n        count += {w}\n"
            f"    {p} //= {base}\nreturn count\n")
    return Draft(name, (p,), doc, indent(body), ((0,), (d,), (base,), (999_999,), (2**40 + 3,)), polylog(0, 1))


def gcd_lcm(rng: random.Random) -> Draft:
    a, b = pick(rng, (("a", "b"), ("x", "y"), ("m", "n"), ("p", "q")))
    variant = rng.randrange(4)
    cases = ((0, 5), (7, 0), (12, 18), (17, 5), (270, 192), (2**20, 6**8))
    if variant == 0:
        name = pick(rng, ("gcd", "greatest_common_divisor", "euclid"))
        doc = f"Return the greatest common divisor of the non-negative integers {a} and {b} (gcd(0, 0) is 0)."
        body = f"if {b} == 0:\n    return {a}\nreturn {name}({b}, {a} % {b})\n"
    elif variant == 1:
        name = pick(rng, ("euclid_steps", "gcd_steps", "division_steps"))
        doc = (f"Return how many remainder steps Euclid's algorithm takes on ({a}, {b}): "
               f"0 when {b} is 0, else 1 plus the steps on ({b}, {a} mod {b}).")
        body = f"if {b} == 0:\n    return 0\nreturn 1 + {name}({b}, {a} % {b})\n"
    elif variant == 2:
        name = pick(rng, ("lcm", "least_common_multiple", "lowest_multiple"))
        doc = f"Return the least common multiple of the positive integers {a} and {b}."
        body = (f"def g(u, v):\n    return u if v == 0 else g(v, u % v)\n\n"
                f"return {a} // g({a}, {b}) * {b}\n")
        cases = ((1, 1), (4, 6), (21, 6), (17, 5), (270, 192), (2**20, 6**8))
    else:
        lo, mod = rng.randint(1, 4), pick(rng, MODULI)
        name = pick(rng, ("lcm_range", "lcm_upto", "range_lcm"))
        doc = f"Return the least common multiple of all integers from {lo} to {b} inclusive, modulo {mod} (1 if empty)."
        body = (f"def g(u, v):\n    return u if v == 0 else g(v, u % v)\n\n"
                f"def run(i):\n    if i < {lo}:\n        return 1\n    rest = run(i - 1)\n"
                f"    return rest // g(rest, i) * i\n\nreturn run({b}) % {mod}\n")
        return Draft(name, (b,), doc, indent(body), ((0,), (lo,), (10,), (25,), (60,)))
    return Draft(name, (a, b), doc, indent(body), cases)


def power_names(rng: random.Random, names: tuple[str, ...]) -> tuple[int, str, str, str]:
    """(modulus, base name, exponent name, function name) of an x^n mod m task."""
    mod = pick(rng, MODULI)
    x, n = pick(rng, (("base", "exp"), ("x", "n"), ("a", "k"), ("b", "e")))
    return mod, x, n, pick(rng, names)


def power_naive(rng: random.Random) -> Draft:
    mod, x, n, name = power_names(rng, ("slow_power", "power_mod", "repeated_multiply", "pow_linear"))
    doc = pick(rng, (f"Return {x} ** {n} modulo {mod} for an integer {x} and {n} >= 0, one multiplication per step.",
                     f"Compute {x} to the power {n} (>= 0) modulo {mod} by multiplying {x} in {n} times."))
    body = f"if {n} == 0:\n    return 1 % {mod}\nreturn {x} * {name}({x}, {n} - 1) % {mod}\n"
    cases = ((5, 0), (0, 0), (2, 10), (-3, 7), (12345, 300), (7, 501))
    return Draft(name, (x, n), doc, indent(body), cases, polylog(1))


def power_fast(rng: random.Random) -> Draft:
    mod, x, n, name = power_names(rng, ("fast_power", "power_by_squaring", "quick_pow", "modpow"))
    doc = pick(rng, (f"Return {x} ** {n} modulo {mod} ({n} >= 0) by repeated squaring.",
                     f"Raise {x} to the {n}-th power modulo {mod} in O(log {n}) multiplications."))
    cases = ((5, 0), (0, 0), (2, 10), (-3, 7), (12345, 10**6), (7, 2**31 - 1))
    return Draft(name, (x, n), doc, indent(squaring_body(name, x, n, mod)), cases, polylog(0, 1))


def squaring_body(name: str, x: str, n: str, mod: int) -> str:
    """x^n mod m by squaring, recursively: Θ(log n) calls."""
    return (f"if {n} == 0:\n    return 1 % {mod}\nhalf = {name}({x}, {n} // 2)\nsquare = half * half % {mod}\n"
            f"if {n} % 2 == 1:\n    return square * {x} % {mod}\nreturn square\n")


def _recurrence(rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    # no shift set with a common factor ([2, 4]): its 1.272^n is too slow for the fit to tell from n^10
    shifts = pick(rng, ([1, 2], [1, 3], [2, 3], [1, 2, 3], [1, 4], [1, 2, 4], [1, 3, 4]))
    coeffs = [pick(rng, (-3, -2, -1, 1, 2, 3)) for _ in shifts]
    first = [rng.randint(-2, 5) for _ in range(max(shifts))]
    return shifts, coeffs, first


def _terms(name: str, p: str, shifts: list[int], coeffs: list[int]) -> str:
    out = ""
    for i, (s, c) in enumerate(zip(shifts, coeffs, strict=True)):
        sign = " - " if c < 0 else (" + " if i else "")
        lead = "-" if c < 0 and not i else ""
        mag = "" if abs(c) == 1 else f"{abs(c)} * "
        out += (lead if not i else sign) + f"{mag}{name}({p} - {s})"
    return out


def _describe(shifts, coeffs, first, fn: str) -> str:
    rule = " + ".join(f"{c}*{fn}(n-{s})" for s, c in zip(shifts, coeffs, strict=True)).replace("+ -", "- ")
    starts = ", ".join(f"{fn}({i}) = {v}" for i, v in enumerate(first))
    return f"{fn}(n) = {rule} for n >= {len(first)}, with {starts}"


def linear_recurrence(rng: random.Random) -> Draft:
    shifts, coeffs, first = _recurrence(rng)
    p = _int_param(rng)
    name = pick(rng, ("sequence_term", "recurrence_value", "nth_term", "tribo_like", "fib_like"))
    doc = pick(rng, (f"Return the {p}-th term ({p} >= 0) of the sequence {_describe(shifts, coeffs, first, 'a')}.",
                     f"Evaluate the recurrence {_describe(shifts, coeffs, first, 'T')} at {p} (>= 0), recursively."))
    body = f"if {p} < {len(first)}:\n    return {tuple(first)!r}[{p}]\nreturn {_terms(name, p, shifts, coeffs)}\n"
    cases = tuple((i,) for i in (0, len(first) - 1, len(first), 6, 11, 15))
    return Draft(name, (p,), doc, indent(body), cases, exponential(shifts))


def linear_recurrence_loop(rng: random.Random) -> Draft:
    shifts, coeffs, first = _recurrence(rng)
    p = _int_param(rng)
    name = pick(rng, ("sequence_term", "recurrence_value", "nth_term", "iterate_recurrence"))
    doc = pick(rng, (f"Return the {p}-th term ({p} >= 0) of {_describe(shifts, coeffs, first, 'a')}, in linear time.",
                     f"Compute {_describe(shifts, coeffs, first, 'T')} at {p} (>= 0) bottom-up."))
    cases = tuple((i,) for i in (0, len(first) - 1, len(first), 10, 40, 200))
    return Draft(name, (p,), doc, indent(recurrence_loop_body(shifts, coeffs, first, p)), cases, polylog(1))


def recurrence_loop_body(shifts: list[int], coeffs: list[int], first: list[int], p: str) -> str:
    """The recurrence's p-th term bottom-up: Θ(p) additions."""
    rule = _terms("vals", "i", shifts, coeffs).replace("vals(i - ", "vals[i - ").replace(")", "]")
    return (f"vals = {list(first)!r}\nfor i in range({len(first)}, {p} + 1):\n    vals.append({rule})\n"
            f"return vals[{p}]\n")


def bit_groups(rng: random.Random) -> Draft:
    k = rng.randint(1, 4)
    mask, g = (1 << k) - 1, rng.randint(0 if k > 1 else 1, (1 << k) - 1)
    p = _int_param(rng)
    variant, h = rng.randrange(2), rng.randint(1, 6)
    if variant == 0:
        name = pick(rng, ("count_groups", "group_matches", "count_bit_chunks"))
        times = f"{h} times " if h > 1 else ""
        doc = (f"Split the non-negative integer {p} into {k}-bit groups from the lowest bit up and return {times}how "
               f"many groups equal {g} (leading zero groups are not counted).")
        body = (f"if {p} == 0:\n    return 0\nhit = {h} if {p} & {mask} == {g} else 0\n"
                f"return hit + {name}({p} >> {k})\n")
    else:
        name = pick(rng, ("weighted_groups", "group_weight_sum", "sum_chunks"))
        doc = (f"Return the sum, over the {k}-bit groups of the non-negative integer {p} (lowest first), of the "
               f"group's value times {g + 1}, recursively.")
        body = f"if {p} == 0:\n    return 0\nreturn ({p} & {mask}) * {g + 1} + {name}({p} >> {k})\n"
    cases = ((0,), (1,), (mask,), (g,), (2**31 - 1,), (0xDEADBEEF,), (12345678901,))
    return Draft(name, (p,), doc, indent(body), cases, polylog(0, 1))


def bit_loop(rng: random.Random) -> Draft:
    k, w, b = rng.randint(1, 4), rng.randint(1, 5), rng.randint(0, 9)
    mask = (1 << k) - 1
    p = _int_param(rng)
    variant = rng.randrange(3)
    if variant == 0:
        name = pick(rng, ("reverse_groups", "mirror_bits", "reverse_chunks"))
        doc = pick(rng, (f"Reverse the order of the {k}-bit groups of the non-negative integer {p} "
                         f"(the lowest group becomes the highest) and return the result.",
                         f"Read {p} (>= 0) as base-{1 << k} digits and return the number with those digits reversed."))
        step = f"out = (out << {k}) | ({p} & {mask})"
    elif variant == 1:
        name = pick(rng, ("group_sum", "chunk_total", "sum_bit_groups"))
        doc = f"Return {w} times the sum of the {k}-bit groups of the non-negative integer {p}, using a loop."
        step = f"out += {w} * ({p} & {mask})"
    else:
        name = pick(rng, ("xor_fold", "fold_groups", "group_parity"))
        doc = f"Return the XOR of all {k}-bit groups of the non-negative integer {p}, using a loop."
        step = f"out ^= {p} & {mask}"
    if b:
        doc += f" Add {b} to the answer."
    body = f"out = 0\nwhile {p} > 0:\n    {step}\n    {p} >>= {k}\nreturn out{f' + {b}' if b else ''}\n"
    return Draft(name, (p,), doc, indent(body), ((0,), (1,), (mask,), (2**20,), (0xDEADBEEF,)), polylog(0, 1))


FAMILIES = (
    Family("range_sum", "recursive", range_sum, "sum of a linear term over a stepped range"),
    Family("range_sum_loop", "iterative", range_sum_loop, "sum of scaled powers over a range"),
    Family("range_product", "recursive", range_product, "product over a stepped range, modulo a prime-ish m"),
    Family("digit_sum", "recursive", digit_sum, "sum of digit powers in a base"),
    Family("digit_count_loop", "iterative", digit_count_loop, "count one digit in a base"),
    Family("gcd_lcm", "recursive", gcd_lcm, "gcd, Euclid steps, lcm, lcm of a range"),
    Family("power_naive", "recursive", power_naive, "x^n mod m, one multiplication per call"),
    Family("power_fast", "recursive", power_fast, "x^n mod m by squaring"),
    Family("linear_recurrence", "recursive", linear_recurrence, "naive recursion on a linear recurrence"),
    Family("linear_recurrence_loop", "iterative", linear_recurrence_loop, "linear recurrence bottom-up"),
    Family("bit_groups", "recursive", bit_groups, "recursion over k-bit groups"),
    Family("bit_loop", "iterative", bit_loop, "reverse k-bit groups in a loop"),
)
