"""Read the recurrence T(n) = sum_i T(b_i n + h_i) + g(n) off a recursive function.

A function that does not call itself has T(n) = g(n): its loops, slices and helper calls,
read by the same interpreter with n chosen the same way (``power(x, n)``'s loop over
``range(n)`` is no function of x, so n is the size).

The size n is not declared in Python, so it is searched for: each int parameter, the
length of each list parameter, the total length of the list parameters, and the gap
``hi - lo`` of each pair of int parameters. The first measure under which every recursive
call shrinks and every cost is a function of n wins (``power(x, n)`` fails on x, since
``x * x`` is no multiple of x, and succeeds on n). A function whose result is a list is
analysed twice: first to learn that it returns lists, then with the results of recursive
calls read as lists (merge sort merges what its calls return).
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field

from koda.analysis.effects import Call, Effect
from koda.analysis.interp import Context, Interp
from koda.analysis.statements import block
from koda.analysis.symbolic import Affine, Dual, Growth, Num, Seq, Undecided, WrongMeasure

MEMO_DECORATORS = {"cache", "lru_cache", "memoize", "memoized", "cached"}
LIST_METHODS = {"append", "extend", "pop", "insert", "index", "count", "copy"}
SEQ_ANNOTATIONS = {"list", "List", "str", "tuple", "Tuple", "Sequence", "bytes"}


@dataclass(frozen=True)
class Recurrence:
    calls: tuple[Call, ...]  # one entry per recursive call: T(b n + h); empty: not recursive
    g: Growth  # the non-recursive work, Theta(n^k log^j n)
    size: str = "n"  # what n is in the code, e.g. "len(xs)"
    assumptions: tuple[str, ...] = field(default=())

    def text(self) -> str:
        if not self.calls:  # not recursive: one call costs the body's work
            return f"T(n) = Θ({self.g})"
        counts = Counter(sorted(self.calls, reverse=True))
        terms = [(f"{k}" if k > 1 else "") + call.text() for call, k in counts.items()]
        return f"T(n) = {' + '.join(terms)} + Θ({self.g})"


@dataclass(frozen=True)
class Extraction:
    function: str
    recurrence: Recurrence | None
    reason: str | None = None  # why there is no recurrence
    roles: dict = field(default_factory=dict)  # parameter -> "int" | "seq" | "other"
    size_params: tuple[str, ...] = ()  # parameters n is read from, in measure order


def param_roles(func: ast.FunctionDef) -> dict[str, str]:
    """'seq' for parameters used as sequences, 'int' for numbers, 'other' otherwise."""
    params = [a.arg for a in func.args.args]
    seq, num = set(), set()
    for a in func.args.args:
        ann = a.annotation
        name = ann.value.id if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) else \
            ann.id if isinstance(ann, ast.Name) else None
        (seq if name in SEQ_ANNOTATIONS else num if name in ("int", "float") else set()).add(a.arg)
    names = lambda node: {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node else set()
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.attr in LIST_METHODS:
            seq.add(node.func.value.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("len", "sorted", "sum", "reversed", "enumerate"):
                seq |= {a.id for a in node.args if isinstance(a, ast.Name)}
            if node.func.id == "range":
                num |= set().union(*(names(a) for a in node.args))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            seq.add(node.value.id)
            sl = node.slice
            num |= names(sl) if not isinstance(sl, ast.Slice) else names(sl.lower) | names(sl.upper)
        elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.iter, ast.Name):
            seq.add(node.iter.id)
        elif isinstance(node, ast.BinOp) and not isinstance(node.op, ast.Add | ast.Mult):
            num |= {s.id for s in (node.left, node.right) if isinstance(s, ast.Name)}
        elif isinstance(node, ast.BinOp):  # + and * also build lists: count them only with a number
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Constant) and isinstance(s.value, int) for s in sides) \
                    or all(isinstance(s, ast.Name) for s in sides):
                num |= {s.id for s in (node.left, node.right) if isinstance(s, ast.Name)}
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Constant) and isinstance(s.value, int | float) for s in sides):
                num |= {s.id for s in sides if isinstance(s, ast.Name)}
            if all(isinstance(s, ast.Name) and s.id in params for s in sides):
                num |= {s.id for s in sides}
            # a counter against a parameter (``while i < n``, ``while i * i <= n``): ordered, so a number; an equality
            # test (``xs[mid] == target``) says nothing about the kind
            if len(sides) == 2 and all(isinstance(s, ast.Name | ast.BinOp) for s in sides) \
                    and isinstance(node.ops[0], ast.Lt | ast.LtE | ast.Gt | ast.GtE):
                num |= {s.id for s in sides if isinstance(s, ast.Name) and s.id in params}
    return {p: "seq" if p in seq else "int" if p in num else "other" for p in params}


def _memoised(func: ast.FunctionDef) -> str | None:
    for dec in func.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in MEMO_DECORATORS:
            return f"memoised by @{name}: the running time is not the recurrence's"
    tested = {c.comparators[0].id for c in ast.walk(func) if isinstance(c, ast.Compare)
              and isinstance(c.ops[0], ast.In | ast.NotIn) and isinstance(c.comparators[0], ast.Name)}
    stored = {t.value.id for a in ast.walk(func) if isinstance(a, ast.Assign) for t in a.targets
              if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)}
    if tested & stored:
        return f"memoised through {sorted(tested & stored)[0]}: the running time is not the recurrence's"
    return None


def _candidates(roles: dict[str, str]) -> list[tuple[Affine, dict[str, str], tuple[str, ...]]]:
    """(measure, symbol -> parameter, parameters read) in the order they are tried."""
    ints = [p for p, r in roles.items() if r == "int"]
    seqs = [p for p, r in roles.items() if r == "seq"]
    out = [(Affine.symbol(p), {p: p}, (p,)) for p in ints]
    out += [(Affine.symbol(f"len({p})"), {f"len({p})": p}, (p,)) for p in seqs]
    if len(seqs) > 1:
        total = Affine.constant(0)
        for p in seqs:
            total = total + Affine.symbol(f"len({p})")
        out.append((total, {f"len({p})": p for p in seqs}, tuple(seqs)))
    out += [(Affine.symbol(hi) - Affine.symbol(lo), {lo: lo, hi: hi}, (lo, hi))
            for i, lo in enumerate(ints) for hi in ints[i + 1:]]
    return out


def _always_passed(func: ast.FunctionDef, params: list[str]) -> set[str]:
    passed = set(params)
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == func.name:
            passed &= set(params[: len(node.args)]) | {k.arg for k in node.keywords}
    return passed


def _run(func, helpers, roles, measure, symbols, returns_seq) -> tuple[Effect, Context, list]:
    params = [a.arg for a in func.args.args]
    ctx = Context(func.name, params, measure, symbols, dict(helpers), returns_seq)
    ctx.always_passed = _always_passed(func, params)
    env = {}
    seq_sym = next((s for s in symbols if s.startswith("len(")), None)
    for p in params:
        if roles[p] == "seq":
            length = Affine.symbol(f"len({p})")
            if f"len({p})" not in symbols and seq_sym is not None:
                length = Affine.symbol(seq_sym)  # another list than the one n measures
                ctx.assumptions.add(f"len({p}) = {seq_sym}")
            env[p] = Seq(length, Dual(length, f"rows of {p} are as long as {p} (square)"))
        else:
            env[p] = Num(Affine.symbol(p)) if roles[p] == "int" else Num()
    interp, eff = Interp(ctx, func), Effect()
    block(interp, func.body, env, eff)
    return eff, ctx, interp.returns


def _typed_run(func, helpers, roles, measure, symbols) -> tuple[Effect, Context]:
    """Run with recursive results read as lists, then as numbers; keep the consistent one.

    Reading them as lists is right when every return gives a list (sorts, products);
    as numbers when none does (counts, searches). Mixed returns stay undecided.
    """
    first: Undecided | None = None
    try:
        eff, ctx, returns = _run(func, helpers, roles, measure, symbols, True)
        if returns and all(isinstance(v, Seq | Dual) for v in returns):
            return eff, ctx
    except Undecided as err:
        first = err
    eff, ctx, returns = _run(func, helpers, roles, measure, symbols, False)
    if any(isinstance(v, Seq) for v in returns):
        raise first or Undecided("returns lists on some paths and other values on others")
    return eff, ctx


def extract(func: ast.FunctionDef, module: ast.Module | None = None) -> Extraction:
    """The recurrence of ``func``, or the reason none can be read off the code."""
    roles = param_roles(func)
    undecided = lambda reason: Extraction(func.name, None, reason, roles)
    recursive = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == func.name
                    for n in ast.walk(func))
    if any(isinstance(n, ast.Yield | ast.YieldFrom | ast.Await) for n in ast.walk(func)):
        return undecided("generators and coroutines are not analysed")
    memo = _memoised(func) if recursive else None
    if memo:
        return undecided(memo)
    helpers = {f.name: f for f in (module.body if module else []) if isinstance(f, ast.FunctionDef)
               and f.name != func.name}
    reasons: list[tuple[bool, str]] = []
    for measure, symbols, used in _candidates(roles):
        try:
            eff, ctx = _typed_run(func, helpers, roles, measure, symbols)
        except Undecided as err:
            reasons.append((isinstance(err, WrongMeasure), str(err)))
            continue
        if recursive and not eff.calls:
            reasons.append((False, "every recursive call sits in a base case"))
            continue
        rec = Recurrence(tuple(sorted(eff.calls, reverse=True)), eff.cost, str(measure),
                         tuple(sorted(ctx.assumptions)))
        return Extraction(func.name, rec, None, roles, used)
    if not reasons:
        return undecided("no parameter measures the input size (no int or list parameter)")
    real = [r for wrong, r in reasons if not wrong]
    if real:  # a measure got past the size checks and met something else: that is the reason
        return undecided(real[0])
    tried = "; ".join(dict.fromkeys(r for _, r in reasons))  # every measure failed on sizes
    return undecided(f"no choice of n fits every recursive call: {tried}")
