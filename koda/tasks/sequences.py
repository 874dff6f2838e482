"""Families over lists, strings and nested tuples: search, sorting, divide and conquer,
string and list recursion, memoised dynamic programming, tree recursion, prefix sums.

Targets are set only where the reference's bound is what ``koda verify`` can derive and
measure on it (``koda tasks check`` holds every target to that); the memoised and
data-dependent families (quick sort's filtered partitions, nested tuples) have none.
"""

from __future__ import annotations

import random

from koda.tasks.family import Draft, Family, indent, ints, pick, polylog
from koda.tasks.numeric import MODULI

LIST_NAMES = ("xs", "items", "values", "nums", "arr", "seq", "data")
STR_NAMES = ("s", "text", "word", "line", "chars")


def _list(rng: random.Random, n: int, lo: int = -50, hi: int = 50) -> list[int]:
    return ints(rng, n, lo, hi)


def _list_cases(rng: random.Random, sizes=(0, 1, 2, 7, 30)) -> tuple[tuple, ...]:
    return tuple((_list(rng, n),) for n in sizes)


def binary_search(rng: random.Random) -> Draft:
    xs, t = pick(rng, LIST_NAMES), pick(rng, ("target", "key", "goal", "t"))
    lo, hi = pick(rng, (("lo", "hi"), ("left", "right"), ("start", "end")))
    variant, desc = rng.randrange(3), rng.random() < 0.5
    order = "descending" if desc else "ascending"
    data = sorted(set(_list(rng, 40, -100, 100)), reverse=desc)
    probes = [data[0], data[-1], data[len(data) // 2], min(data) - 1, max(data) + 1, 3]
    if variant == 0:
        missing = rng.randint(-60, -1)
        name = pick(rng, ("find_index", "binary_search", "locate", "search_sorted"))
        doc = (f"{xs}[{lo}..{hi}] (inclusive) is sorted {order} with distinct values. Return an index i in that "
               f"range with {xs}[i] == {t}, or {missing} if there is none. Use binary search.")
        body = (f"if {lo} > {hi}:\n    return {missing}\nmid = ({lo} + {hi}) // 2\nif {xs}[mid] == {t}:\n"
                f"    return mid\nif {xs}[mid] {'>' if desc else '<'} {t}:\n"
                f"    return {name}({xs}, {t}, mid + 1, {hi})\nreturn {name}({xs}, {t}, {lo}, mid - 1)\n")
        cases = tuple((data, p, 0, len(data) - 1) for p in probes) + (([], 4, 0, -1),)
    else:
        strict, c = variant == 2, rng.randint(-9, 9)
        goal = t if c == 0 else (f"{t} + {c}" if c > 0 else f"{t} - {-c}")
        cmp = ("<=" if strict else "<") if not desc else (">=" if strict else ">")
        name = pick(rng, ("upper_bound", "first_past", "bisect_right") if strict else
                    ("lower_bound", "first_not_before", "bisect_left"))
        rel = ("greater than" if strict else "greater than or equal to") if not desc else \
            ("less than" if strict else "less than or equal to")
        doc = (f"{xs}[{lo}:{hi}] is sorted {order}. Return the first index i in [{lo}, {hi}) whose value is {rel} "
               f"{goal}, or {hi} if there is none, by halving the range.")
        body = (f"if {lo} >= {hi}:\n    return {lo}\nmid = ({lo} + {hi}) // 2\nif {xs}[mid] {cmp} {goal}:\n"
                f"    return {name}({xs}, {t}, mid + 1, {hi})\nreturn {name}({xs}, {t}, {lo}, mid)\n")
        dup = sorted(_list(rng, 40, -20, 20), reverse=desc)
        cases = tuple((dup, p, 0, len(dup)) for p in (dup[0], dup[-1], dup[20], -30, 30, 0)) + (([], 1, 0, 0),)
    return Draft(name, (xs, t, lo, hi), doc, indent(body), cases, polylog(0, 1))


def _key(rng: random.Random) -> tuple[str, str]:
    """(key expression on v, wording): ~1,700 keys, so the sorting families have as many
    instances (the expression is a constant-time function of one element either way)."""
    m, c = rng.randint(2, 40), pick(rng, [i for i in range(-20, 21) if i])
    shifted = f"v - {c}" if c > 0 else f"v + {-c}"
    return pick(rng, (("v", "by value"), ("-v", "by value, largest first"), ("abs(v)", "by absolute value"),
                      ("-abs(v)", "by absolute value, largest first"), (f"v % {m}", f"by remainder modulo {m}"),
                      (f"-(v % {m})", f"by remainder modulo {m}, largest first"),
                      (f"v // {m}", f"by the floor of the value divided by {m}"),
                      (f"abs({shifted})", f"by distance from {c}"),
                      (f"-abs({shifted})", f"by distance from {c}, farthest first"),
                      (f"({shifted}) % {m}", f"by the remainder of {shifted} modulo {m}"))), m


def merge_sort(rng: random.Random) -> Draft:
    (key, wording), _ = _key(rng)
    xs = pick(rng, LIST_NAMES)
    name = pick(rng, ("merge_sort", "sort_by_merging", "stable_sort", "msort"))
    doc = pick(rng, (f"Return a new list with the elements of {xs} sorted {wording}, stably (equal keys keep their "
                     f"order), using merge sort.",
                     f"Sort {xs} {wording} with a top-down merge sort; ties keep their input order. "
                     f"Return a new list."))
    kl, kr = key.replace("v", "left[i]"), key.replace("v", "right[j]")
    body = (f"if len({xs}) <= 1:\n    return list({xs})\nmid = len({xs}) // 2\nleft = {name}({xs}[:mid])\n"
            f"right = {name}({xs}[mid:])\nout = []\ni = j = 0\nwhile i < len(left) and j < len(right):\n"
            f"    if {kl} <= {kr}:\n        out.append(left[i])\n        i += 1\n    else:\n"
            f"        out.append(right[j])\n        j += 1\nreturn out + left[i:] + right[j:]\n")
    return Draft(name, (xs,), doc, indent(body), _list_cases(rng, (0, 1, 2, 9, 40)), polylog(1, 1))


def quick_sort(rng: random.Random) -> Draft:
    (key, wording), _ = _key(rng)
    xs = pick(rng, LIST_NAMES)
    pivot = pick(rng, (("0", "first"), (f"len({xs}) // 2", "middle"), ("-1", "last")))
    name = pick(rng, ("quick_sort", "qsort", "partition_sort"))
    doc = (f"Return a new list with {xs} sorted {wording} using quicksort with the {pivot[1]} element as pivot "
           f"(elements with equal keys keep their input order).")
    k = key.replace("v", "x")
    kp = key.replace("v", "p")
    body = (f"if len({xs}) <= 1:\n    return list({xs})\nat = {pivot[0]} % len({xs})\np = {xs}[at]\n"
            f"rest = {xs}[:at] + {xs}[at + 1:]\nsmaller = [x for x in rest if {k} < {kp}]\n"
            f"same = [x for x in {xs}[:at] if {k} == {kp}] + [p] + [x for x in {xs}[at + 1:] if {k} == {kp}]\n"
            f"larger = [x for x in rest if {k} > {kp}]\nreturn {name}(smaller) + same + {name}(larger)\n")
    return Draft(name, (xs,), doc, indent(body), _list_cases(rng, (0, 1, 2, 9, 40)))


def insertion_sort(rng: random.Random) -> Draft:
    (key, wording), _ = _key(rng)
    xs = pick(rng, LIST_NAMES)
    name = pick(rng, ("insertion_sort", "insert_sort", "sort_by_inserting"))
    doc = (f"Return a new list with {xs} sorted {wording}, stably, by recursively sorting all but the last element "
           f"and inserting the last one.")
    kl, kr = key.replace("v", "rest[i - 1]"), key.replace("v", "last")
    body = (f"if len({xs}) <= 1:\n    return list({xs})\nrest = {name}({xs}[:-1])\nlast = {xs}[-1]\ni = len(rest)\n"
            f"while i > 0 and {kl} > {kr}:\n    i -= 1\nreturn rest[:i] + [last] + rest[i:]\n")
    return Draft(name, (xs,), doc, indent(body), _list_cases(rng, (0, 1, 2, 9, 40)), polylog(2))


def uneven_split(rng: random.Random) -> Draft:
    a, b = pick(rng, ((1, 3), (1, 4), (2, 5), (1, 5), (3, 7), (2, 7), (3, 8), (3, 10)))
    base, work = -(-b // a) + rng.randint(0, 2), rng.random() < 0.5  # base >= b/a: both pieces shrink
    leaf = rng.randint(1, 5)
    p = pick(rng, ("n", "size", "length", "m"))
    name = pick(rng, ("split_cost", "uneven_tree", "split_count", "divide_work"))
    what = f"plus {p} units of work for a piece of size {p}" if work else "plus 1 for every piece"
    doc = (f"A piece of size {p} > {base} is cut into pieces of size {p} * {a} // {b} and {p} - {p} * {a} // {b}. "
           + (f"Return the number of pieces of size at most {base} that result" if leaf == 1 else
              f"Return {leaf} for every piece of size at most {base} that results")
           + f", {what} larger than {base}.")
    step = f"for _ in range({p}):\n    cost += 1\n" if work else "cost += 1\n"
    body = (f"if {p} <= {base}:\n    return {leaf}\ncut = {p} * {a} // {b}\ncost = 0\n{step}"
            f"return cost + {name}(cut) + {name}({p} - cut)\n")
    cases = tuple((i,) for i in (0, base, base + 1, 10, 100, 1000))
    return Draft(name, (p,), doc, indent(body), cases, polylog(1, 1) if work else polylog(1))


def string_recursion(rng: random.Random) -> Draft:
    s = pick(rng, STR_NAMES)
    variant = rng.randrange(4)
    target = None
    if variant == 0:
        ch = pick(rng, "abcdexyz")
        name = pick(rng, ("count_char", "occurrences", "tally_letter"))
        doc = f"Return how many times the character {ch!r} occurs in {s}, recursively."
        body = f"if not {s}:\n    return 0\nreturn (1 if {s}[0] == {ch!r} else 0) + {name}({s}[1:])\n"
        target = polylog(2)
    elif variant == 1:
        chars = sorted(rng.sample("aeioubcdxyz", rng.randint(2, 4)))
        name = pick(rng, ("count_in_set", "count_members", "tally_chars"))
        doc = f"Return how many characters of {s} are one of {', '.join(map(repr, chars))}, recursively."
        test = " or ".join(f"{s}[0] == {c!r}" for c in chars)
        body = f"if not {s}:\n    return 0\nreturn (1 if {test} else 0) + {name}({s}[1:])\n"
        target = polylog(2)
    elif variant == 2:
        sep = pick(rng, ("", "-", "|", ".", "  "))
        name = pick(rng, ("reverse", "reversed_text", "mirror"))
        doc = f"Return {s} reversed, with {sep!r} between consecutive characters, recursively."
        body = f"if len({s}) <= 1:\n    return {s}\nreturn {name}({s}[1:]) + {sep!r} + {s}[0]\n"
    else:
        fold = rng.random() < 0.5
        name = pick(rng, ("is_palindrome", "palindrome", "reads_same_backwards"))
        how = " ignoring case" if fold else ""
        doc = f"Return True when {s} reads the same forwards and backwards{how}, recursively."
        eq = f"{s}[0].lower() != {s}[-1].lower()" if fold else f"{s}[0] != {s}[-1]"
        body = f"if len({s}) <= 1:\n    return True\nif {eq}:\n    return False\nreturn {name}({s}[1:-1])\n"
    words = ("", "a", "abba", "Level", "racecar", "banana split", "xyzzy" * 5, "Abcdefedcba", "aeiou" * 8)
    return Draft(name, (s,), doc, indent(body), tuple((w,) for w in words), target)


def list_recursion(rng: random.Random) -> Draft:
    xs = pick(rng, LIST_NAMES)
    variant = rng.randrange(3)
    c, d = rng.randint(1, 9), rng.randint(-5, 5)

    def term(v: str) -> str:  # c * v + d
        return f"{c} * {v}" + (f" + {d}" if d > 0 else f" - {-d}" if d < 0 else "")

    if variant == 0:
        name = pick(rng, ("flatten", "flat_list", "unnest"))
        doc = (f"Flatten the nested list {xs} (lists inside lists, any depth) into one list, each number v "
               f"becoming {term('v')}.")
        body = (f"out = []\nfor item in {xs}:\n    if isinstance(item, list):\n        out.extend({name}(item))\n"
                f"    else:\n        out.append({term('item')})\nreturn out\n")
        cases = (([],), ([1, [2, 3]],), ([[[]], [4, [5, [6]]], 7],), ([[1, 2], [3, [4, [5, [6, [7]]]]]],))
        return Draft(name, (xs,), doc, indent(body), cases)
    if variant == 1:
        lo, hi = pick(rng, (("lo", "hi"), ("left", "right"), ("i", "j")))
        name = pick(rng, ("range_max", "max_between", "largest_in_range"))
        doc = (f"Return the largest of {term('v')} for v in {xs}[{lo}..{hi}] (inclusive, {lo} <= {hi}), by splitting "
               f"the range in halves.")
        body = (f"if {lo} == {hi}:\n    return {term(f'{xs}[{lo}]')}\nmid = ({lo} + {hi}) // 2\n"
                f"return max({name}({xs}, {lo}, mid), {name}({xs}, mid + 1, {hi}))\n")
        cases = tuple((v, 0, len(v) - 1) for v in (_list(rng, n) for n in (1, 2, 7, 40)))
        return Draft(name, (xs, lo, hi), doc, indent(body), cases, polylog(1))
    name = pick(rng, ("prefix_sums", "running_totals", "cumulative"))
    doc = (f"Return the list of running sums of {term('v')} over {xs} (same length), recursively on all but the "
           f"last item.")
    body = (f"if not {xs}:\n    return []\nrest = {name}({xs}[:-1])\n"
            f"return rest + [(rest[-1] if rest else 0) + {term(f'{xs}[-1]')}]\n")
    return Draft(name, (xs,), doc, indent(body), _list_cases(rng), polylog(2))


def prefix_sums_loop(rng: random.Random) -> Draft:
    xs = pick(rng, LIST_NAMES)
    k, c = rng.randint(1, 6), rng.randint(1, 9)
    mod = pick(rng, MODULI) if rng.random() < 0.8 else None
    name = pick(rng, ("strided_prefix", "running_sums", "window_totals"))
    mod_text = f", each taken modulo {mod}" if mod else ""
    item = f"{c} * {xs}[i]" if c > 1 else f"{xs}[i]"
    doc = (f"Return out with out[i] = {item} + out[i - {k}] (and out[i] = {item} for i < {k}){mod_text}: "
           f"prefix sums over every {k}-th element.")
    val = f"({item} + prev) % {mod}" if mod else f"{item} + prev"
    body = (f"out = []\nfor i in range(len({xs})):\n    prev = out[i - {k}] if i >= {k} else 0\n"
            f"    out.append({val})\nreturn out\n")
    return Draft(name, (xs,), doc, indent(body), _list_cases(rng, (0, 1, 5, 30, 100)), polylog(1))


def stairs_dp(rng: random.Random) -> Draft:
    steps = sorted(rng.sample(range(1, 7), rng.randint(2, 3)))
    mod = rng.choice((97, 1009, 10007, 1_000_000_007))
    p = pick(rng, ("n", "stairs", "height", "steps_left"))
    name = pick(rng, ("count_climbs", "stair_ways", "ways_to_top"))
    doc = (f"Return the number of ordered ways to climb exactly {p} stairs taking steps of sizes {steps}, modulo "
           f"{mod}. Memoise the recursion.")
    body = (f"from functools import lru_cache\n\n@lru_cache(maxsize=None)\ndef ways(i):\n    if i == 0:\n"
            f"        return 1\n    return sum(ways(i - s) for s in {tuple(steps)!r} if s <= i) % {mod}\n\n"
            f"return ways({p})\n")
    return Draft(name, (p,), doc, indent(body), tuple((i,) for i in (0, 1, 2, 5, 30, 200)))


def coin_change(rng: random.Random) -> Draft:
    coins = sorted(rng.sample(range(1, 30), rng.randint(2, 4)))
    p = pick(rng, ("amount", "total", "n", "target"))
    if rng.random() < 0.5:
        name = pick(rng, ("fewest_coins", "min_coins", "coin_count"))
        doc = f"Return the fewest coins from {coins} (unlimited supply) summing to {p}, or -1 if impossible. Memoise."
        body = (f"from functools import lru_cache\n\n@lru_cache(maxsize=None)\ndef best(a):\n    if a == 0:\n"
                f"        return 0\n    options = [best(a - c) for c in {tuple(coins)!r} if c <= a]\n"
                f"    options = [o for o in options if o >= 0]\n    return min(options) + 1 if options else -1\n\n"
                f"return best({p})\n")
    else:
        name = pick(rng, ("coin_combinations", "change_ways", "count_change"))
        doc = f"Return the number of multisets of coins from {coins} summing to {p}. Memoise the recursion."
        body = (f"from functools import lru_cache\n\ncoins = {tuple(coins)!r}\n\n@lru_cache(maxsize=None)\n"
                f"def ways(a, i):\n    if a == 0:\n        return 1\n"
                f"    if a < 0 or i == len(coins):\n        return 0\n"
                f"    return ways(a - coins[i], i) + ways(a, i + 1)\n\nreturn ways({p}, 0)\n")
    return Draft(name, (p,), doc, indent(body), tuple((i,) for i in (0, 1, coins[0], 29, 97, 250)))


def edit_distance(rng: random.Random) -> Draft:
    # substitution cheaper than a deletion plus an insertion: a dearer one is never used, and
    # every such cost would be one function
    ins, dele = rng.randint(1, 6), rng.randint(1, 6)
    sub = rng.randint(1, ins + dele - 1)
    a, b = pick(rng, (("a", "b"), ("s", "t"), ("source", "target"), ("first", "second")))
    name = pick(rng, ("edit_distance", "weighted_levenshtein", "transform_cost"))
    doc = (f"Return the cheapest cost to turn {a} into {b} with insertions costing {ins}, deletions {dele} and "
           f"substitutions {sub}. Memoise the recursion over suffixes.")
    body = (f"from functools import lru_cache\n\n@lru_cache(maxsize=None)\ndef cost(i, j):\n    if i == len({a}):\n"
            f"        return {ins} * (len({b}) - j)\n    if j == len({b}):\n        return {dele} * (len({a}) - i)\n"
            f"    if {a}[i] == {b}[j]:\n        return cost(i + 1, j + 1)\n"
            f"    return min({ins} + cost(i, j + 1), {dele} + cost(i + 1, j), {sub} + cost(i + 1, j + 1))\n\n"
            f"return cost(0, 0)\n")
    pairs = (("", ""), ("", "abc"), ("kitten", "sitting"), ("flaw", "lawn"), ("intention", "execution"))
    return Draft(name, (a, b), doc, indent(body), pairs)


def nested_tuples(rng: random.Random) -> Draft:
    t = pick(rng, ("tree", "node", "t", "nest"))
    variant = rng.randrange(3)
    w = rng.randint(1, 60)
    if variant == 0:
        name = pick(rng, ("depth_weighted_sum", "weighted_leaves", "leaf_score"))
        doc = (f"{t} is a number (a leaf) or a tuple of trees. Return the sum of every leaf times ({w} + its depth), "
               f"the root being at depth 0.")
        body = (f"def walk(node, depth):\n    if not isinstance(node, tuple):\n        return node * ({w} + depth)\n"
                f"    return sum(walk(c, depth + 1) for c in node)\n\nreturn walk({t}, 0)\n")
    elif variant == 1:
        name = pick(rng, ("tree_height", "max_depth", "nesting_depth"))
        doc = f"{t} is a number or a tuple of trees. Return {w} times the depth of its deepest leaf (an empty tuple " \
              f"has depth 0, a leaf at the root too)."
        body = (f"def depth(node):\n    if not isinstance(node, tuple) or not node:\n        return 0\n"
                f"    return 1 + max(depth(c) for c in node)\n\nreturn {w} * depth({t})\n")
    else:
        name = pick(rng, ("count_leaves", "leaf_total", "leaves_over"))
        doc = f"{t} is a number or a tuple of trees. Return how many leaves are greater than {w}."
        body = (f"if not isinstance({t}, tuple):\n    return 1 if {t} > {w} else 0\n"
                f"return sum({name}(c) for c in {t})\n")
    cases = ((5,), ((),), ((1, 2, 3),), ((1, (2, (3, (4,)))),), (((7, 8), (), (9, (10, -3))),))
    return Draft(name, (t,), doc, indent(body), cases)


FAMILIES = (
    Family("binary_search", "recursive", binary_search, "exact / lower / upper bound search on a range"),
    Family("merge_sort", "recursive", merge_sort, "stable merge sort under a key"),
    Family("quick_sort", "recursive", quick_sort, "stable three-way quicksort under a key"),
    Family("insertion_sort", "recursive", insertion_sort, "recursive insertion sort under a key"),
    Family("uneven_split", "recursive", uneven_split, "divide and conquer with an a/b : (b-a)/b split"),
    Family("string_recursion", "recursive", string_recursion, "count, reverse, palindrome on strings"),
    Family("list_recursion", "recursive", list_recursion, "flatten, max by halves, prefix sums"),
    Family("prefix_sums_loop", "iterative", prefix_sums_loop, "strided prefix sums in a loop"),
    Family("stairs_dp", "recursive", stairs_dp, "memoised ways to climb stairs"),
    Family("coin_change", "recursive", coin_change, "memoised fewest coins / ways to pay"),
    Family("edit_distance", "recursive", edit_distance, "memoised weighted edit distance"),
    Family("nested_tuples", "recursive", nested_tuples, "tree recursion on nested tuples"),
)
