"""Statements for the abstract interpreter: sequencing, branches and base cases.

Early returns are read the way programmers write them: after ``if n <= 1: return 1`` the
rest of the block is the else branch. A branch whose condition bounds n by a constant is a
base case and costs O(1), whatever it calls, since its inputs have constant size.
"""

from __future__ import annotations

import ast

from koda.analysis.effects import Effect, either
from koda.analysis.loops import bind, for_loop, while_loop
from koda.analysis.symbolic import EPS, Num, Other, Seq, Undecided, join

_FLIP = {ast.Lt: ast.GtE, ast.LtE: ast.Gt, ast.Gt: ast.LtE, ast.GtE: ast.Lt,
         ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


def block(interp, stmts: list[ast.stmt], env: dict, eff: Effect) -> tuple[dict, bool]:
    """Analyse ``stmts``; returns (environment after, whether every path left the block)."""
    env = dict(env)
    for i, stmt in enumerate(stmts):
        if isinstance(stmt, ast.If):
            env, done, consumed = _if(interp, stmt, stmts[i + 1:], env, eff)
            if done or consumed:
                return env, done
            continue
        env, done = _simple(interp, stmt, env, eff)
        if done:
            return env, True
    return env, False


def _simple(interp, stmt: ast.stmt, env: dict, eff: Effect) -> tuple[dict, bool]:
    ex = interp.expr
    if isinstance(stmt, ast.Assign):
        value = ex(stmt.value, env, eff)
        for target in stmt.targets:
            bind(interp, target, value, env, eff)
    elif isinstance(stmt, ast.AnnAssign):
        if stmt.value is not None:
            bind(interp, stmt.target, ex(stmt.value, env, eff), env, eff)
    elif isinstance(stmt, ast.AugAssign):
        target = stmt.target
        current = env.get(target.id, Num()) if isinstance(target, ast.Name) else ex(target, env, eff)
        value = interp.binop(current, stmt.op, ex(stmt.value, env, eff), eff, stmt.lineno)
        if isinstance(stmt.target, ast.Name):
            env[stmt.target.id] = value
    elif isinstance(stmt, ast.Expr):
        ex(stmt.value, env, eff)
    elif isinstance(stmt, ast.Return):
        interp.returns.append(ex(stmt.value, env, eff) if stmt.value is not None else Other("None"))
        return env, True
    elif isinstance(stmt, ast.Raise):
        if stmt.exc is not None:
            ex(stmt.exc, env, eff)
        return env, True
    elif isinstance(stmt, ast.Break | ast.Continue):
        return env, True
    elif isinstance(stmt, ast.Assert):
        ex(stmt.test, env, eff)
    elif isinstance(stmt, ast.Pass | ast.Global | ast.Nonlocal):
        pass
    elif isinstance(stmt, ast.FunctionDef):  # a local helper: analysed where it is called
        if stmt.name == interp.ctx.name:
            raise Undecided(f"local function shadows {stmt.name}()")
        interp.ctx.helpers = interp.ctx.helpers | {stmt.name: stmt}
        env.pop(stmt.name, None)
    elif isinstance(stmt, ast.Import | ast.ImportFrom):
        for alias in stmt.names:
            env[(alias.asname or alias.name).split(".")[0]] = Other(alias.name)
    elif isinstance(stmt, ast.For):
        env = for_loop(interp, stmt, env, eff)
        block(interp, stmt.orelse, env, eff)
    elif isinstance(stmt, ast.While):
        env = while_loop(interp, stmt, env, eff)
    elif isinstance(stmt, ast.Delete):
        for t in stmt.targets:
            if isinstance(t, ast.Subscript):  # del xs[i] shifts the tail
                eff.cost = eff.cost + interp.ctx.size(ex(t.value, env, eff), "del")
    elif isinstance(stmt, ast.With):
        for item in stmt.items:
            ex(item.context_expr, env, eff)
        return block(interp, stmt.body, env, eff)
    elif isinstance(stmt, ast.Try):
        body = Effect()
        env, done = block(interp, stmt.body + stmt.orelse, env, body)
        for handler in stmt.handlers:
            other = Effect()
            block(interp, handler.body, env, other)
            body = either(body, other)
        eff.then(body)
        block(interp, stmt.finalbody, env, eff)
    else:
        raise Undecided(f"unsupported statement {type(stmt).__name__} (line {stmt.lineno})")
    return env, False


def _form(interp, node: ast.expr, env: dict):
    value = interp.expr(node, env, Effect())
    return value.form if isinstance(value, Num) else value.length if isinstance(value, Seq) else None


def _size_ratio(interp, node: ast.expr, env: dict, minus: ast.expr | None = None) -> float | None:
    """b when ``node`` (less ``minus``) evaluates to b*n + c (a number or a length)."""
    form = _form(interp, node, env)
    if form is not None and minus is not None:
        other = _form(interp, minus, env)
        form = None if other is None else form - other
    return None if form is None else form.ratio_to(interp.ctx.measure)


def bounds_n(interp, test: ast.expr, env: dict, holds: bool = True) -> bool:
    """Whether n is at most a constant where ``test`` evaluates to ``holds``."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return bounds_n(interp, test.operand, env, not holds)
    if isinstance(test, ast.BoolOp):
        parts = [bounds_n(interp, v, env, holds) for v in test.values]
        return any(parts) if isinstance(test.op, ast.And) == holds else all(parts)
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op = type(test.ops[0]) if holds else _FLIP.get(type(test.ops[0]))
        try:
            b = _size_ratio(interp, test.left, env, minus=test.comparators[0])
        except Undecided:
            return False
        if b is None or abs(b) < EPS:
            return False
        return op is ast.Eq or (b > 0 and op in (ast.Lt, ast.LtE)) or (b < 0 and op in (ast.Gt, ast.GtE))
    if not holds:  # `if n:` / `if xs:` is false only when n == 0
        try:
            b = _size_ratio(interp, test, env)
        except Undecided:
            return False
        return b is not None and b > EPS
    return False


def is_parity(interp, test: ast.expr, env: dict) -> bool:
    """``n % 2 == 0``, ``n % 2``, ``n & 1`` and their negations, on n itself."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return is_parity(interp, test.operand, env)
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.NotEq):
        test = test.left
    if isinstance(test, ast.BinOp) and isinstance(test.right, ast.Constant) and (
            isinstance(test.op, ast.Mod) and test.right.value == 2 or isinstance(test.op, ast.BitAnd)
            and test.right.value == 1):
        try:
            b = _size_ratio(interp, test.left, env)
        except Undecided:
            return False
        return b is not None and abs(b - 1) < EPS
    return False


def _default_filled(interp, test: ast.expr) -> bool:
    """``if hi is None:`` for a parameter every recursive call passes explicitly.

    Only the outermost call can take that branch, once, so it is not part of the recurrence.
    """
    return (interp.depth == 0 and isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Is) and isinstance(test.left, ast.Name)
            and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None
            and test.left.id in interp.ctx.always_passed)


def _if(interp, node: ast.If, rest: list[ast.stmt], env: dict, eff: Effect) -> tuple[dict, bool, bool]:
    """Returns (env after, every path left, whether ``rest`` was folded into a branch)."""
    if _default_filled(interp, node.test):  # recursive calls never take this branch
        env, done = block(interp, node.orelse + rest, env, eff)
        return env, done, True
    interp.expr(node.test, env, eff)
    then_eff, else_eff = Effect(), Effect()
    then_env, then_done = block(interp, node.body, env, then_eff)
    else_env, else_done = block(interp, node.orelse, env, else_eff)
    consumed = bool(rest) and then_done != else_done
    if consumed and then_done:
        else_eff = Effect()
        else_env, else_done = block(interp, node.orelse + rest, env, else_eff)
    elif consumed:
        then_eff = Effect()
        then_env, then_done = block(interp, node.body + rest, env, then_eff)
    if bounds_n(interp, node.test, env, True):
        then_eff = Effect()  # a base case: constant-size inputs, constant cost
    if bounds_n(interp, node.test, env, False):
        else_eff = Effect()
    eff.then(either(then_eff, else_eff, parity=is_parity(interp, node.test, env)))
    if then_done != else_done and not consumed:
        return (else_env if then_done else then_env), False, False
    merged = {k: join(then_env[k], else_env[k]) if k in else_env else then_env[k] for k in then_env}
    return merged | {k: v for k, v in else_env.items() if k not in merged}, then_done and else_done, consumed
