"""Build the measurement program: the user's module with operation counters, plus a driver.

Counting, not timing: wall-clock times on a shared CPU are too noisy to tell n log n from
n^1.1, while operation counts are exact and repeatable. An operation is one executed
statement, plus one per element that C code touches on the program's behalf: items
produced by comprehensions, elements copied by slices, concatenation and repetition,
elements scanned by ``in``, by ``sum``/``max``/``list``/... and by list methods like
``extend`` or ``insert``; ``sorted`` and ``.sort`` count n log2 n. Calls are counted apart.

The counters live in the program's globals (``_koda_ops``; one leading underscore, since
two would be name-mangled inside class bodies); the driver resets them, calls
the function at growing sizes and prints one JSON line with the points.
"""

from __future__ import annotations

import ast
import json

from koda import ast_parse

METHODS = {"extend", "copy", "index", "count", "insert", "remove", "reverse", "sort", "join", "pop"}
PRELUDE = '''
import builtins as _koda_b
import math as _koda_math
_koda_ops = [0, 0]
def _koda_len(x):
    try:
        return len(x)
    except TypeError:
        return 0
def _koda_touch(x):
    _koda_ops[0] += _koda_len(x)
    return x
def _koda_it(xs):
    for x in xs:
        _koda_ops[0] += 1
        yield x
def _koda_add(a, b):
    r = a + b
    _koda_ops[0] += _koda_len(r)
    return r
def _koda_mul(a, b):
    r = a * b
    _koda_ops[0] += _koda_len(r)
    return r
def _koda_nlogn(k):
    return int(k * _koda_math.log2(k)) if k > 1 else k
def _koda_meth(obj, name, *args):
    if name in ("sort",):
        _koda_ops[0] += _koda_nlogn(_koda_len(obj))
    elif name in ("extend", "join"):
        _koda_ops[0] += _koda_len(args[0]) if args else 0
    elif name != "pop" or args:
        _koda_ops[0] += _koda_len(obj)
    return getattr(obj, name)(*args)
def _koda_walk(f):
    def walked(*args, **kw):
        if len(args) == 1:
            _koda_ops[0] += _koda_len(args[0])
        return f(*args, **kw)
    return walked
for _koda_name in ("sum", "max", "min", "any", "all", "list", "tuple", "set", "frozenset", "dict"):
    globals()[_koda_name] = _koda_walk(getattr(_koda_b, _koda_name))
def sorted(xs, *a, **k):
    r = _koda_b.sorted(xs, *a, **k)
    _koda_ops[0] += _koda_nlogn(len(r))
    return r
'''


class _Counter(ast.NodeTransformer):
    """Rewrites one module: statement ticks, call counts and element-touching operations."""

    def _tick(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for stmt in body:
            out.append(ast_parse.parse("_koda_ops[0] += 1").body[0])
            out.append(self.visit(stmt))
        return out

    def generic_visit(self, node):
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt) \
                    and not isinstance(node, ast.Module):
                setattr(node, name, self._tick(stmts))
        for name, value in ast.iter_fields(node):
            if name in ("body", "orelse", "finalbody") and not isinstance(node, ast.Module):
                continue
            if isinstance(value, list):
                setattr(node, name, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def visit_FunctionDef(self, node):
        node = self.generic_visit(node)
        node.body.insert(0, ast_parse.parse("_koda_ops[1] += 1").body[0])
        return node

    def visit_comprehension(self, node):
        node = self.generic_visit(node)
        node.iter = ast.Call(ast.Name("_koda_it", ast.Load()), [node.iter], [])
        return node

    def visit_Subscript(self, node):
        node = self.generic_visit(node)
        if isinstance(node.slice, ast.Slice) and isinstance(node.ctx, ast.Load):
            return ast.Call(ast.Name("_koda_touch", ast.Load()), [node], [])
        return node

    def visit_BinOp(self, node):
        node = self.generic_visit(node)
        if isinstance(node.op, ast.Add | ast.Mult):
            name = "_koda_add" if isinstance(node.op, ast.Add) else "_koda_mul"
            return ast.Call(ast.Name(name, ast.Load()), [node.left, node.right], [])
        return node

    def visit_Compare(self, node):
        node = self.generic_visit(node)
        node.comparators = [ast.Call(ast.Name("_koda_touch", ast.Load()), [c], [])
                            if isinstance(op, ast.In | ast.NotIn) else c
                            for op, c in zip(node.ops, node.comparators, strict=True)]
        return node

    def visit_Call(self, node):
        node = self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in METHODS and not node.keywords:
            args = [f.value, ast.Constant(f.attr), *node.args]
            return ast.Call(ast.Name("_koda_meth", ast.Load()), args, [])
        return node


def instrument(tree: ast.Module) -> str:
    """Source of ``tree`` with counters; every module-level function is instrumented."""
    counted = ast.fix_missing_locations(_Counter().visit(ast_parse.parse(ast.unparse(tree))))
    return ast.unparse(counted)


DRIVER = '''
import json as _koda_json, random as _koda_random, sys as _koda_sys, time as _koda_time
import threading as _koda_threading
_koda_sys.setrecursionlimit(1_000_000)
def _koda_args(n, spec, rng):
    args = []
    for kind in spec:
        if kind == "n":
            args.append(n)
        elif kind == "lo":
            args.append(0)
        elif kind == "hi":
            args.append(n - 1)
        elif kind == "sorted":
            args.append(list(range(0, 2 * n, 2)))
        elif kind == "list":
            args.append([rng.randrange(1 << 30) for _ in range(n)])
        elif kind == "half-list":
            args.append([rng.randrange(1 << 30) for _ in range(n // 2)])
        elif kind == "matrix":
            args.append([[rng.randrange(10) for _ in range(n)] for _ in range(n)])
        elif kind == "absent":
            args.append(-1)
        else:
            args.append(int(kind))
    return args
def _koda_main(name, spec, sizes, budget_s, max_ops, out):
    rng = _koda_random.Random(0)
    start = _koda_time.perf_counter()
    for n in sizes:
        args = _koda_args(n, spec, rng)
        _koda_ops[0] = _koda_ops[1] = 0
        t0 = _koda_time.perf_counter()
        try:
            globals()[name](*args)
        except RecursionError:
            out["stopped"] = f"recursion too deep at n={n}"
            break
        except Exception as err:
            out["error"] = f"{type(err).__name__} at n={n}: {err}"[:300]
            break
        dt = _koda_time.perf_counter() - t0
        out["points"].append([n, _koda_ops[0], _koda_ops[1], round(dt, 6)])
        if _koda_ops[0] > max_ops or _koda_time.perf_counter() - start + 3 * dt > budget_s:
            break
_koda_out = {"points": []}
_koda_threading.stack_size(256 * 1024 * 1024)
_koda_thread = _koda_threading.Thread(target=_koda_main, args=(%s, _koda_out))
_koda_thread.start()
_koda_thread.join()
print(_koda_json.dumps(_koda_out))
'''


def measurement_program(tree: ast.Module, name: str, spec: list[str], sizes: list[int],
                        budget_s: float, max_ops: int) -> str:
    """The whole program: prelude, instrumented module, driver for function ``name``.

    ``spec`` gives one input kind per parameter: "n", "lo", "hi", "list", "half-list",
    "sorted", "matrix", "absent" (a value not in a sorted list), or an integer literal.
    """
    args = ", ".join(json.dumps(x) for x in (name, spec, sizes, budget_s, max_ops))
    return PRELUDE + "\n" + instrument(tree) + "\n" + DRIVER % args
