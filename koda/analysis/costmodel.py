"""What builtins and common methods cost, and what they return, in the abstract domain.

The model is the word-RAM one textbooks use: arithmetic on numbers is O(1) whatever their
size, and a builtin that walks a sequence costs its length (``sorted`` costs n log n).
Lazy builtins (``range``, ``zip``, ``enumerate``, ``reversed``, ``map``) cost O(1) when
called; their length is paid by whoever iterates them. Functions not listed here are not
assumed cheap: the extractor reports them as undecided.
"""

from __future__ import annotations

import builtins
from typing import Protocol

from koda.analysis.symbolic import ONE, Affine, Growth, Num, Other, Seq, Undecided, Value, log_growth, sqrt_growth

NLOGN = Growth(0.0, 1)  # multiplied by the length's growth: n * log n

CONSTANT_BUILTINS = {"abs", "bool", "chr", "divmod", "float", "hash", "id", "int", "isinstance", "ord",
                     "pow", "round", "callable", "type", "complex", "bin", "hex", "oct", "getattr",
                     "hasattr", "setattr", "issubclass", "object"}
# raise ValueError(...) in a guard: building the exception is O(1), its arguments are costed
EXCEPTIONS = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
WALKING_BUILTINS = {"sum", "max", "min", "any", "all"}  # one pass, returns an element/number
COPYING_BUILTINS = {"list", "tuple", "set", "frozenset", "dict", "bytes", "bytearray"}
LAZY_BUILTINS = {"range", "zip", "enumerate", "reversed", "map", "filter", "iter"}
REFUSED_BUILTINS = {"eval", "exec", "input", "open", "compile", "__import__", "globals", "locals"}

CONSTANT_METHODS = {"append", "add", "get", "setdefault", "keys", "values", "items", "discard",
                    "popleft", "appendleft", "__len__", "isdigit", "isalpha", "bit_length"}
WALKING_METHODS = {"insert", "remove", "index", "count", "copy", "reverse", "lower", "upper",
                   "strip", "lstrip", "rstrip", "split", "replace", "startswith", "endswith",
                   "find", "format", "clear"}
ARGUMENT_METHODS = {"extend", "update", "join"}  # cost the length of the argument
PURE_MODULES = {"math", "operator", "cmath"}


# integer functions whose value sets loop trip counts: name -> how the size of the result grows
ROOTS = {"isqrt", "sqrt"}
LOGS = {"log", "log2", "log10", "log1p"}


class SizeContext(Protocol):
    def as_seq(self, value: Value, what: str) -> Seq: ...
    def size(self, seq: Seq, what: str) -> Growth: ...
    def num_growth(self, value: Value, what: str) -> Growth | None: ...


def sized_number(name: str, arg: Value, ctx: SizeContext) -> Num:
    """``math.isqrt(n)``, ``math.log2(n)``, ``n.bit_length()``...: a number whose size in n is
    known though not affine (what a loop over ``range`` of it costs)."""
    g = ctx.num_growth(arg, f"{name}()")
    if g is None:
        return Num()
    if name in ROOTS:
        return Num(growth=sqrt_growth(g, f"{name}()"))
    return Num(growth=log_growth(g, f"{name}()"))


def _length(value: Value) -> Affine | None:
    return value.length if isinstance(value, Seq) else None


def builtin(name: str, args: list[Value], ctx: SizeContext) -> tuple[Value, Growth]:
    """(result value, cost) of calling builtin ``name`` on abstract ``args``."""
    if name in REFUSED_BUILTINS:
        raise Undecided(f"call to {name}() (I/O or dynamic code)")
    if name == "len":
        seq = ctx.as_seq(args[0], "len()") if args else Seq(None)
        return Num(seq.length, growth=seq.size if seq.length is None else None), ONE
    if name in ("int", "round", "abs") and len(args) == 1 and isinstance(args[0], Num) \
            and args[0].growth is not None:  # int(math.log2(n)) keeps the size of the log
        return Num(growth=args[0].growth), ONE
    if name in CONSTANT_BUILTINS or name in EXCEPTIONS or name == "print" and all(
            not isinstance(a, Seq) for a in args):
        return (Num() if name != "type" else Other("type")), ONE
    if name == "print":
        return Other("None"), sum((ctx.size(a, "print()") for a in args if isinstance(a, Seq)), ONE)
    if name in ("str", "repr"):
        if args and isinstance(args[0], Seq):
            return Seq(None), ctx.size(args[0], f"{name}()")
        return Seq(Affine.constant(1), upto=True), ONE  # a number prints in O(1) characters (word RAM)
    if name in WALKING_BUILTINS:
        if len(args) != 1:  # max(a, b): a fixed number of arguments
            return Num(), ONE
        seq = ctx.as_seq(args[0], f"{name}()")
        return (seq.elem if name in ("max", "min") else Num()), ctx.size(seq, f"{name}()")
    if name in COPYING_BUILTINS or name == "sorted":
        if not args:
            return Seq(Affine.constant(0)), ONE
        seq = ctx.as_seq(args[0], f"{name}()")
        cost = ctx.size(seq, f"{name}()")
        if name == "sorted":
            cost = cost * NLOGN if cost != ONE else ONE
        upto = seq.upto or name in ("set", "frozenset", "dict")
        return Seq(seq.length, seq.elem, upto), cost
    if name in LAZY_BUILTINS:
        return _lazy(name, args, ctx), ONE
    raise Undecided(f"call to {name}() whose cost is unknown")


def _lazy(name: str, args: list[Value], ctx: SizeContext) -> Seq:
    if name == "range":
        forms = [a.form if isinstance(a, Num) else None for a in args]
        stop = args[0] if len(args) == 1 else args[1] if args else None
        if isinstance(stop, Num) and stop.growth is not None and all(
                f is not None and f.is_const for i, f in enumerate(forms) if i != (0 if len(args) == 1 else 1)):
            return Seq(None, size=stop.growth)  # range(isqrt(n)), range(1, n.bit_length(), 2)
        if any(f is None for f in forms) or not forms:
            return Seq(None)
        if len(forms) == 1:
            return Seq(forms[0])
        span = forms[1] - forms[0]
        if len(forms) == 3:
            step = forms[2]
            if not step.is_const or step.const == 0:
                return Seq(None)
            span = span.scale(1.0 / step.const)
        return Seq(span)
    seqs = [ctx.as_seq(a, f"{name}()") for a in args[(1 if name in ("map", "filter") else 0):]]
    if not seqs:
        return Seq(None)
    if name == "zip":
        lengths = [s.length for s in seqs]
        shortest = _shortest(lengths)
        return Seq(shortest, Seq(Affine.constant(len(seqs)), Num(), items=tuple(s.elem for s in seqs)),
                   any(s.upto for s in seqs) or shortest is None)
    if name == "enumerate":
        s = seqs[0]
        return Seq(s.length, Seq(Affine.constant(2), Num(), items=(Num(), s.elem)), s.upto)
    if name == "filter":
        return Seq(seqs[0].length, seqs[0].elem, True)
    return Seq(seqs[0].length, Num() if name == "map" else seqs[0].elem, seqs[0].upto)


def _shortest(lengths: list[Affine | None]) -> Affine | None:
    """min() of lengths that differ by a constant (``a[:m]`` and ``a[m:]``), else None."""
    best = lengths[0]
    for other in lengths[1:]:
        if best is None or other is None:
            return None
        gap = best - other
        if not gap.is_const:
            return None
        best = other if gap.const > 0 else best
    return best


def method(receiver: Value, name: str, args: list[Value], ctx: SizeContext) -> tuple[Value, Growth]:
    """(result value, cost) of ``receiver.name(*args)``; list growth is the caller's job."""
    if isinstance(receiver, Other) and receiver.what in PURE_MODULES:
        if name in ROOTS | LOGS and args:
            return sized_number(name, args[0], ctx), ONE
        return Num(), ONE
    if name == "bit_length" and isinstance(receiver, Num):
        return sized_number(name, receiver, ctx), ONE
    if name in CONSTANT_METHODS:
        return (Seq(None, upto=True) if name in ("keys", "values", "items") else Num()), ONE
    if name == "pop":
        if not args or isinstance(receiver, Other):  # pop() from the end, or dict.pop(key)
            return (receiver.elem if isinstance(receiver, Seq) else Num()), ONE
        return Num(), ctx.size(ctx.as_seq(receiver, ".pop(i)"), ".pop(i)")
    if name in ARGUMENT_METHODS and args:
        seq = ctx.as_seq(args[-1], f".{name}()")
        result = Seq(seq.length, upto=True) if name == "join" else Other("None")
        return result, ctx.size(seq, f".{name}()")
    if name == "sort":
        cost = ctx.size(ctx.as_seq(receiver, ".sort()"), ".sort()")
        return Other("None"), (cost * NLOGN if cost != ONE else ONE)
    if name in WALKING_METHODS:
        seq = ctx.as_seq(receiver, f".{name}()")
        result = Seq(seq.length, upto=True) if name in ("copy", "split") else Num()
        return result, ctx.size(seq, f".{name}()")
    raise Undecided(f"call to method .{name}() whose cost is unknown")
