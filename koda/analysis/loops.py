"""Trip counts of loops and comprehensions, for the abstract interpreter.

``for`` loops and comprehensions run once per item of what they iterate, so their trip
count is that sequence's length. A ``while`` loop needs a ranking argument: a counter in its
condition that every path through the body moves towards the bound by a constant step
(``i += 1`` against ``i < len(xs)``) or halves (``k //= 2`` against ``k > 0``). The trip
count is then at most the sum of the counters' distances (or their logarithms). Loops
without such a counter are undecided; they are where a guess would creep in.
"""

from __future__ import annotations

import ast

from koda.analysis import symbolic as sym
from koda.analysis.effects import Effect
from koda.analysis.symbolic import ONE, Affine, Dual, Growth, Num, Other, Seq, Undecided, Value, growth_of


def bind(interp, target: ast.expr, value: Value, env: dict, eff: Effect) -> None:
    """Assign ``value`` to ``target`` (a name, a tuple to unpack, or a subscript/attribute)."""
    if isinstance(target, ast.Name):
        env[target.id] = value
    elif isinstance(target, ast.Tuple | ast.List):
        items = value.items if isinstance(value, Seq) else None
        if items is not None and len(items) == len(target.elts):
            for t, v in zip(target.elts, items, strict=True):
                bind(interp, t, v, env, eff)
            return
        elem = value.elem if isinstance(value, Seq) else Num()
        for t in target.elts:
            bind(interp, t.value if isinstance(t, ast.Starred) else t,
                 Seq(None, elem, True) if isinstance(t, ast.Starred) else elem, env, eff)
    elif isinstance(target, ast.Subscript):
        interp.expr(target.value, env, eff)
        if isinstance(target.slice, ast.Slice):  # xs[a:b] = ys copies ys
            eff.cost = eff.cost + interp.ctx.size(value, "slice assignment")
        else:
            interp.expr(target.slice, env, eff)
    elif isinstance(target, ast.Attribute):
        interp.expr(target.value, env, eff)
    else:
        raise Undecided(f"unsupported assignment target {type(target).__name__}")


def assigned_names(stmts: list[ast.stmt]) -> set[str]:
    return {n.id for s in stmts for n in ast.walk(s)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def widen(value: Value, rising: bool = False) -> Value:
    """What a variable reassigned in a loop body is known to be at an arbitrary iteration.

    ``rising``: the loop only increments it, so its value before the loop stays a lower bound.
    """
    if isinstance(value, Num):
        return Num(lower=value.form if value.form is not None else value.lower) if rising else Num()
    if isinstance(value, Seq):
        return Seq(None, value.elem, True)
    return value


def _trips(interp, seq: Seq, what: str) -> tuple[Growth, int | None]:
    growth = interp.ctx.size(seq, what)
    if seq.length is not None and seq.length.is_const:
        return growth, max(0, round(seq.length.const))
    return growth, None


def run_loop(interp, target, seq: Seq, body: list[ast.stmt], env: dict, eff: Effect,
             trips: tuple[Growth, int | None], test: ast.expr | None = None) -> dict:
    """Analyse ``body`` as run ``trips`` times; returns the environment after the loop."""
    from koda.analysis.statements import block
    changed = assigned_names(body) | ({n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
                                      if target is not None else set())
    rising = {k for k in changed if (steps := _updates(body, k)) and all(s == "inc" for s in steps)}
    inner = {k: widen(v, k in rising) if k in changed else v for k, v in env.items()}
    body_eff = Effect()
    if target is not None:
        bind(interp, target, seq.elem, inner, body_eff)
    if test is not None:
        interp.expr(test, inner, body_eff)
    interp.trips.append(seq.length)
    try:
        inner, _ = block(interp, body, inner, body_eff)
    finally:
        interp.trips.pop()
    eff.then(body_eff.repeated(*trips))
    return {k: widen(v, k in rising) if k in changed else inner.get(k, v) for k, v in env.items()} | {
        k: widen(v) for k, v in inner.items() if k not in env}


def for_loop(interp, node: ast.For, env: dict, eff: Effect) -> dict:
    seq = interp.ctx.as_seq(interp.expr(node.iter, env, eff), "for loop")
    return run_loop(interp, node.target, seq, node.body, env, eff, _trips(interp, seq, "for-loop trip count"))


def _step(stmt: ast.stmt, name: str) -> str | None:
    """How ``stmt`` changes counter ``name``: 'inc', 'dec', 'halve', or None (unknown)."""
    if isinstance(stmt, ast.AugAssign):
        op, amount = stmt.op, stmt.value
    elif isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.BinOp) \
            and isinstance(stmt.value.left, ast.Name) and stmt.value.left.id == name:
        op, amount = stmt.value.op, stmt.value.right
    else:
        return None
    if not (isinstance(amount, ast.Constant) and isinstance(amount.value, int) and amount.value > 0):
        return None
    if isinstance(op, ast.Add):
        return "inc"
    if isinstance(op, ast.Sub):
        return "dec"
    if isinstance(op, ast.FloorDiv) and amount.value >= 2 or isinstance(op, ast.RShift):
        return "halve"
    if isinstance(op, ast.Mult) and amount.value >= 2 or isinstance(op, ast.LShift):
        return "double"
    return None


def _updates(body: list[ast.stmt], name: str) -> list[str | None]:
    out = []
    for node in (n for s in body for n in ast.walk(s)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AugAssign | ast.AnnAssign | ast.For) else []
        for t in targets:
            if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(t)):
                out.append(_step(node, name) if isinstance(t, ast.Name) else None)
    return out


def _every_path_moves(stmts: list[ast.stmt], counters: set[str]) -> bool:
    for s in stmts:
        if isinstance(s, ast.AugAssign | ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in counters
                for t in (s.targets if isinstance(s, ast.Assign) else [s.target])):
            return True
        if isinstance(s, ast.Break | ast.Return | ast.Raise):
            return True
        if isinstance(s, ast.If) and all(_every_path_moves(b, counters) for b in (s.body, s.orelse)):
            return True
        if isinstance(s, ast.Continue):
            return False
    return False


def _squared(node: ast.expr) -> str | None:
    """``i * i`` or ``i ** 2`` -> "i"."""
    if isinstance(node, ast.BinOp) and isinstance(node.left, ast.Name):
        if isinstance(node.op, ast.Mult) and isinstance(node.right, ast.Name) and node.right.id == node.left.id:
            return node.left.id
        if isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant) and node.right.value == 2:
            return node.left.id
    return None


def _conditions(test: ast.expr) -> list[tuple[str, str, ast.expr | None, int]]:
    """(counter, direction needed, bound, power) for each conjunct of a while condition;
    power 2 when the counter is squared (``while i * i <= n``: the bound is on i^2)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [c for v in test.values for c in _conditions(v)]
    if isinstance(test, ast.Name):
        return [(test.id, "dec", ast.Constant(0), 1)]
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        up, down = (ast.Lt, ast.LtE, ast.NotEq), (ast.Gt, ast.GtE, ast.NotEq)
        if isinstance(left, ast.Name):
            return [(left.id, "inc", right, 1)] * isinstance(op, up) + [(left.id, "dec", right, 1)] * isinstance(
                op, down)
        if _squared(left) and isinstance(op, up):
            return [(_squared(left), "inc", right, 2)]
        if isinstance(right, ast.Name):
            return [(right.id, "inc", left, 1)] * isinstance(op, down) + [(right.id, "dec", left, 1)] * isinstance(
                op, up)
    return []


def _limit_growth(interp, bound, env) -> Growth | None:
    """Θ-size in n of a loop bound (a number or a sequence's length), None when unknown."""
    limit = interp.expr(bound, env, Effect())
    if isinstance(limit, Seq | Dual):
        return interp.ctx.size(limit, "while-loop bound") if limit.length is not None else None
    return interp.ctx.num_growth(limit, "while-loop bound")


def while_loop(interp, node: ast.While, env: dict, eff: Effect) -> dict:
    ctx, scratch = interp.ctx, Effect()
    moving, trips, forms = set(), ONE, Affine.constant(0)
    for name, direction, bound, power in _conditions(node.test):
        steps = _updates(node.body, name)
        init = env.get(name)
        if not steps or None in steps or not isinstance(init, Num):
            continue
        if init.form is None and direction == "inc" and init.lower is not None:
            init = Num(init.lower)  # distance to the bound is at most limit - lower
        if init.form is None:
            continue
        starts_positive = init.form.is_const and init.form.const >= 1
        if direction == "inc" and starts_positive and (power == 2 or all(s == "double" for s in steps)) \
                and all(s in ("inc", "double") for s in steps) and len(set(steps)) == 1:
            # i from a positive constant, doubled until it passes the bound: log of the bound's
            # size; stepped by a constant while i * i stays under it: its square root
            size = _limit_growth(interp, bound, env)
            if size is None:
                continue
            if steps[0] == "double":
                trips, forms = trips + (sym.log_growth(size, "while-loop bound") if size != ONE else ONE), None
            else:
                trips, forms = trips + sym.sqrt_growth(size, "while-loop bound"), None
        elif power == 2:
            continue
        elif all(s == "halve" for s in steps) and direction == "dec":
            start = growth_of(init.form, ctx.measure, "while-loop counter")
            trips, forms = trips + (Growth(0, 1) if start != ONE else ONE), None
        elif all(s == direction for s in steps):
            limit = interp.expr(bound, env, scratch)
            limit_form = limit.form if isinstance(limit, Num) else limit.length \
                if isinstance(limit, Seq | Dual) else None
            if limit_form is None:
                continue
            span = limit_form - init.form if direction == "inc" else init.form - limit_form
            trips = trips + growth_of(span, ctx.measure, "while-loop trip count")
            forms = None if forms is None else forms + span
        else:
            continue
        moving.add(name)
    if not moving:
        raise Undecided(f"while loop (line {node.lineno}) without a counter that moves towards its bound")
    if not _every_path_moves(node.body, moving):
        raise Undecided(f"while loop (line {node.lineno}): some path through the body moves no counter")
    count = round(forms.const) if forms is not None and forms.is_const else None
    return run_loop(interp, None, Seq(forms), node.body, env, eff, (trips, count), test=node.test)


def comprehension(interp, node, env: dict, eff: Effect, elt_nodes: list[ast.expr]) -> Value:
    """Cost and value of a list/set/dict comprehension or generator expression."""
    scope, mult, count, filtered = dict(env), ONE, 1, False
    lengths: list[Affine | None] = []
    for gen in node.generators:
        part = Effect()
        seq = interp.ctx.as_seq(interp.expr(gen.iter, scope, part), "comprehension")
        eff.then(part.repeated(mult, count))
        growth, trip = _trips(interp, seq, "comprehension trip count")
        mult, count = mult * growth, None if count is None or trip is None else count * trip
        lengths.append(seq.length)
        filtered = filtered or seq.upto or bool(gen.ifs)
        bind(interp, gen.target, seq.elem, scope, Effect())
        for cond in gen.ifs:
            part = Effect()
            interp.expr(cond, scope, part)
            eff.then(part.repeated(mult, count))
    part, values = Effect(), []
    interp.trips.append(lengths[0] if len(lengths) == 1 else None)
    try:
        values = [interp.expr(e, scope, part) for e in elt_nodes]
    finally:
        interp.trips.pop()
    eff.then(part.repeated(mult, count))
    variable = [n for n in lengths if n is None or not n.is_const]
    length = None
    if all(n is not None for n in lengths) and len(variable) <= 1:
        length = Affine.constant(1)
        for n in lengths:
            length = n.scale(length.const) if length.is_const else length.scale(n.const)
    elem = values[0] if len(values) == 1 else Other("dict item")
    return Seq(length, elem, filtered or length is None)
