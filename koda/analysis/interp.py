"""Abstract interpretation of one function body: sizes in, cost and self-calls out.

One pass over the body in program order, with an environment from names to abstract
values (``symbolic``). Loops multiply their body's cost by their trip count, branches take
the worst case (``effects.either``), and a branch guarded by ``n <= c`` (a base case) costs
O(1) because n is bounded there. Helper functions of the same module are analysed at their
call sites with the caller's argument sizes, so ``add(A11, B11)`` costs what it costs on
those halves. ``loops.py`` handles ``for``/``while``; this module handles everything else.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from koda.analysis import costmodel
from koda.analysis import symbolic as sym
from koda.analysis.effects import Call, Effect, either
from koda.analysis.symbolic import EPS, Affine, Dual, Growth, Num, Other, Seq, Undecided, Value, WrongMeasure

MAX_HELPER_DEPTH = 4


@dataclass
class Context:
    """Facts shared by every frame of one extraction."""

    name: str  # the recursive function
    params: list[str]
    measure: Affine  # n as a form over parameter symbols
    symbols: dict[str, str]  # symbol -> the parameter it reads ("len(xs)" -> "xs")
    helpers: dict[str, ast.FunctionDef]
    returns_seq: bool = False
    assumptions: set[str] = field(default_factory=set)
    always_passed: set[str] = field(default_factory=set)  # parameters every recursive call passes

    def as_seq(self, value: Value, what: str) -> Seq:
        if isinstance(value, Seq):
            return value
        if isinstance(value, Dual):
            self.assumptions.add(value.note)
            row = Dual(value.length, value.row_note or value.note)
            return Seq(value.length, row, value.upto)
        raise Undecided(f"{what} applied to a value whose length is unknown")

    def size(self, value: Value, what: str) -> Growth:
        seq = self.as_seq(value, what)
        if seq.length is None and seq.size is not None:  # range(isqrt(n)), range(n.bit_length())
            return seq.size
        if seq.length is None:
            raise Undecided(f"{what} over a sequence whose length is unknown")
        return sym.growth_of(seq.length, self.measure, what)

    def num_growth(self, value: Value, what: str) -> Growth | None:
        """Θ-size in n of a number (its affine form's, or the growth an integer function gave it)."""
        if isinstance(value, Num) and value.growth is not None:
            return value.growth
        if isinstance(value, Num) and value.form is not None:
            return sym.growth_of(value.form, self.measure, what)
        return None

    def call_size(self, args: list[Value], keywords: dict[str, Value], defaults: dict[str, Value]) -> Call:
        """The size b*n + h of a recursive call, from its arguments."""
        bound = dict(defaults) | dict(zip(self.params, args, strict=False)) | keywords
        values: dict[str, Affine] = {}
        for symbol, param in self.symbols.items():
            arg = bound.get(param)
            form = None
            if symbol == param and isinstance(arg, Num):
                form = arg.form
            elif symbol != param and isinstance(arg, Seq | Dual):
                if isinstance(arg, Seq | Dual) and arg.upto:
                    raise Undecided(f"recursive call on {param} whose length is bounded but not known "
                                    "(a filtered list, or a slice at a data-dependent index)")
                form = arg.length
            if form is None:
                raise WrongMeasure(f"recursive call passes {param} whose size is not an affine function of n")
            values[symbol] = form
        new = self.measure.substitute(values)
        b = new.ratio_to(self.measure)
        if b is None:
            raise WrongMeasure(f"recursive call on size {new}, not a multiple of n = {self.measure}")
        h = new.const - b * self.measure.const
        if b < EPS or b > 1 + EPS or (abs(b - 1) <= EPS and h > -EPS):
            raise WrongMeasure(f"recursive call on size {new} does not shrink n = {self.measure}")
        return Call(min(b, 1.0), h)


class Interp:
    """Evaluates expressions and statements of one frame (the function or a helper)."""

    def __init__(self, ctx: Context, func: ast.FunctionDef, depth: int = 0):
        self.ctx, self.func, self.depth = ctx, func, depth
        self.trips: list[Affine | None] = []  # trip counts of the enclosing loops
        self.returns: list[Value] = []
        self.defaults = {a.arg: Num() for a in func.args.args}

    # ---- expressions ------------------------------------------------------------------

    def expr(self, node: ast.expr, env: dict, eff: Effect) -> Value:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise Undecided(f"unsupported expression {type(node).__name__} (line {node.lineno})")
        return method(node, env, eff)

    def _Constant(self, node, env, eff):
        v = node.value
        if isinstance(v, bool) or v is None:
            return Num() if isinstance(v, bool) else Other("None")
        if isinstance(v, int | float):
            return Num(Affine.constant(v))
        return Seq(Affine.constant(len(v))) if isinstance(v, str | bytes) else Other()

    def _Name(self, node, env, eff):
        if node.id in env:
            return env[node.id]
        return Other(node.id) if node.id in costmodel.PURE_MODULES else Other("global")

    def _num(self, value: Value) -> Affine | None:
        return value.form if isinstance(value, Num) else None

    def _BinOp(self, node, env, eff):
        left, right = self.expr(node.left, env, eff), self.expr(node.right, env, eff)
        return self.binop(left, node.op, right, eff, getattr(node, "lineno", 0))

    def binop(self, left: Value, op: ast.operator, right: Value, eff: Effect, lineno: int) -> Value:
        listy = lambda v: isinstance(v, Seq) or isinstance(v, Dual) and v.upto  # noqa: E731
        if isinstance(op, ast.Add) and isinstance(left, Seq | Dual) and isinstance(right, Seq | Dual) \
                and (listy(left) or listy(right)):  # a list or a recursive call's list: concatenation
            left, right = self.ctx.as_seq(left, "+"), self.ctx.as_seq(right, "+")
            total = None if left.length is None or right.length is None else left.length + right.length
            out = Seq(total, sym.join(left.elem, right.elem), left.upto or right.upto)
            eff.cost = eff.cost + self.ctx.size(out, "concatenation")
            return out
        if isinstance(op, ast.Mult) and (isinstance(left, Seq) or isinstance(right, Seq)):
            seq, k = (left, right) if isinstance(left, Seq) else (right, left)
            form = self._num(k)
            if seq.length is None or form is None:
                raise Undecided(f"list repetition of unknown size (line {lineno})")
            if seq.length.is_const:
                length = form.scale(seq.length.const)
            elif form.is_const:
                length = seq.length.scale(form.const)
            else:
                raise Undecided(f"list repetition of quadratic size (line {lineno})")
            out = Seq(length, seq.elem)
            eff.cost = eff.cost + self.ctx.size(out, "list repetition")
            return out
        a, b = self._num(left), self._num(right)
        if a is None or b is None:
            return Num()
        if isinstance(op, ast.Add | ast.Sub):
            return Num(a + b if isinstance(op, ast.Add) else a - b)
        if isinstance(op, ast.Mult) and (a.is_const or b.is_const):
            return Num(a.scale(b.const) if b.is_const else b.scale(a.const))
        if isinstance(op, ast.Div | ast.FloorDiv) and b.is_const and abs(b.const) > EPS:
            return Num(a.scale(1.0 / b.const))  # floors do not change the asymptotics
        if isinstance(op, ast.RShift | ast.LShift) and b.is_const:
            return Num(a.scale(2.0 ** (-b.const if isinstance(op, ast.RShift) else b.const)))
        return Num()

    def _UnaryOp(self, node, env, eff):
        value = self.expr(node.operand, env, eff)
        if isinstance(node.op, ast.USub) and isinstance(value, Num) and value.form is not None:
            return Num(value.form.scale(-1.0))
        return Num()

    def _BoolOp(self, node, env, eff):
        values = [self.expr(v, env, eff) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = sym.join(out, v)
        return out

    def _Compare(self, node, env, eff):
        self.expr(node.left, env, eff)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = self.expr(comp, env, eff)
            if isinstance(op, ast.In | ast.NotIn) and isinstance(right, Seq) and right.items is None:
                eff.cost = eff.cost + self.ctx.size(right, "'in' test")
        return Num()

    def _IfExp(self, node, env, eff):
        self.expr(node.test, env, eff)
        a, b = Effect(), Effect()
        va, vb = self.expr(node.body, env, a), self.expr(node.orelse, env, b)
        eff.then(either(a, b))
        return sym.join(va, vb)

    def _Attribute(self, node, env, eff):
        self.expr(node.value, env, eff)
        return Other("attribute")

    def _Subscript(self, node, env, eff):
        base = self.expr(node.value, env, eff)
        if isinstance(node.slice, ast.Slice):
            return self._slice(base, node.slice, env, eff)
        index = self.expr(node.slice, env, eff)
        if isinstance(base, Seq):
            if base.items is not None and isinstance(index, Num) and index.form is not None \
                    and index.form.is_const and 0 <= int(index.form.const) < len(base.items):
                return base.items[int(index.form.const)]
            return base.elem
        if isinstance(base, Dual):
            return Dual(base.length, base.row_note or base.note)
        return Num()

    def _slice(self, base: Value, sl: ast.Slice, env: dict, eff: Effect) -> Seq:
        seq = self.ctx.as_seq(base, "slicing")
        lo, hi, step = (None if p is None else self.expr(p, env, eff) for p in (sl.lower, sl.upper, sl.step))

        def bound(value: Value | None, default: Affine | None) -> Affine | None:
            if value is None:
                return default
            form = self._num(value)
            if form is not None and form.is_const and form.const < 0 and seq.length is not None:
                return seq.length + form  # xs[:-1]
            return form

        start, stop = bound(lo, Affine.constant(0)), bound(hi, seq.length)
        length, upto = (None, True) if start is None or stop is None else (stop - start, seq.upto)
        if length is None:  # unknown bounds: at most the whole sequence
            length = seq.length
        if step is not None:
            k = self._num(step)
            if k is None or not k.is_const or abs(k.const) < 1:
                raise Undecided("slice with a variable step")
            length = None if length is None else length.scale(1.0 / abs(k.const))
        out = Seq(length, seq.elem, upto)
        eff.cost = eff.cost + self.ctx.size(out, "slicing")
        return out

    def _List(self, node, env, eff):
        items, extra = [], Affine.constant(0)
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                inner = self.ctx.as_seq(self.expr(elt.value, env, eff), "unpacking")
                eff.cost = eff.cost + self.ctx.size(inner, "unpacking")
                extra = extra + inner.length
            else:
                items.append(self.expr(elt, env, eff))
        elem: Value = items[0] if items else Num()
        for v in items[1:]:
            elem = sym.join(elem, v)
        return Seq(extra + Affine.constant(len(items)), elem, items=tuple(items) if extra.is_const else None)

    _Tuple = _Set = _List

    def _Dict(self, node, env, eff):
        for part in [*node.keys, *node.values]:
            if part is not None:
                self.expr(part, env, eff)
        return Other("dict")

    def _JoinedStr(self, node, env, eff):
        for part in node.values:
            self.expr(part, env, eff)
        return Seq(None, upto=True)

    def _FormattedValue(self, node, env, eff):
        return self.expr(node.value, env, eff)

    def _Lambda(self, node, env, eff):
        return Other("lambda")

    def _comprehension(self, node, env, eff, elt_nodes):
        from koda.analysis.loops import comprehension
        return comprehension(self, node, env, eff, elt_nodes)

    def _ListComp(self, node, env, eff):
        return self._comprehension(node, env, eff, [node.elt])

    _SetComp = _GeneratorExp = _ListComp

    def _DictComp(self, node, env, eff):
        self._comprehension(node, env, eff, [node.key, node.value])
        return Other("dict")

    def _Call(self, node, env, eff):
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise Undecided(f"call with *args (line {node.lineno})")
            args.append(self.expr(a, env, eff))
        keywords = {k.arg: self.expr(k.value, env, eff) for k in node.keywords if k.arg}
        func = node.func
        if isinstance(func, ast.Name):
            if func.id == self.ctx.name:
                return self._recurse(args, keywords, eff)
            if func.id in env and not isinstance(env[func.id], Other):
                raise Undecided(f"call to {func.id}(), a value passed in or computed (line {node.lineno})")
            if func.id in self.ctx.helpers:
                return self._helper(self.ctx.helpers[func.id], args, keywords, eff)
            value, cost = costmodel.builtin(func.id, args, self.ctx)
            eff.cost = eff.cost + cost
            return value
        if isinstance(func, ast.Attribute):
            receiver = self.expr(func.value, env, eff)
            value, cost = costmodel.method(receiver, func.attr, args, self.ctx)
            eff.cost = eff.cost + cost
            if func.attr in ("append", "extend", "insert", "add") and isinstance(func.value, ast.Name):
                self._grow(func.value.id, env, args, func.attr)
            return value
        raise Undecided(f"call through an expression (line {node.lineno})")

    def _grow(self, name: str, env: dict, args: list[Value], how: str) -> None:
        """A list grown in place: its length becomes an upper bound from the loop trips."""
        seq = env.get(name)
        if not isinstance(seq, Seq):
            return
        step = Affine.constant(1) if how != "extend" else self.ctx.as_seq(args[-1], ".extend()").length
        trips = Affine.constant(1)
        for t in self.trips:
            if t is None or step is None or not (t.is_const or trips.is_const):
                env[name] = Seq(None, seq.elem, True)
                return
            trips = t.scale(trips.const) if trips.is_const else trips.scale(t.const)
        if step is None or seq.length is None or not (trips.is_const or step.is_const):
            env[name] = Seq(None, seq.elem, True)
            return
        added = trips.scale(step.const) if step.is_const else step.scale(trips.const)
        elem = args[0] if how in ("append", "insert", "add") and args else seq.elem
        env[name] = Seq(seq.length + added, sym.join(seq.elem, elem) if seq.length.const else elem, True)

    def _recurse(self, args, keywords, eff) -> Value:
        if self.depth:
            raise Undecided(f"mutual recursion through helper {self.func.name}()")
        call = self.ctx.call_size(args, keywords, self.defaults)
        eff.calls.append(call)
        if not self.ctx.returns_seq:
            return Num()
        if not any(s.startswith("len(") for s in self.ctx.symbols):  # n is a number, not a length
            return Seq(None, upto=True)
        form = self.ctx.measure.scale(call.b) + Affine.constant(call.h)
        return Dual(form, "a recursive call on m items returns O(m) items", upto=True,
                    row_note="rows of returned matrices are as long as the matrix")

    def _helper(self, func: ast.FunctionDef, args, keywords, eff) -> Value:
        if self.depth >= MAX_HELPER_DEPTH:
            raise Undecided(f"helpers nest deeper than {MAX_HELPER_DEPTH} (at {func.name}())")
        if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == func.name
               for n in ast.walk(func)):
            raise Undecided(f"helper {func.name}() is itself recursive")
        params = [a.arg for a in func.args.args]
        env = {p: Num() for p in params} | dict(zip(params, args, strict=False)) | keywords
        frame = Interp(self.ctx, func, self.depth + 1)
        inner = Effect()
        from koda.analysis.statements import block
        block(frame, func.body, env, inner)
        eff.cost = eff.cost + inner.cost
        out = frame.returns[0] if frame.returns else Other("None")
        for v in frame.returns[1:]:
            out = sym.join(out, v)
        return out
