"""Lift methods out of classes so the function analyses apply to them unchanged.

Generated solutions often come as ``class Solution: def f(self, n): ... self.f(n - 1)``.
A method that uses ``self`` (or its class name) only to call methods of the same class
behaves exactly like a module-level function whose calls go to lifted siblings, so it is
copied out as ``Solution__f(n)``, with ``self.g(...)`` rewritten to ``Solution__g(...)``.
Methods that read or write instance state are left alone: their cost may depend on it.
The lifted copies run in the sandbox too, so measurement and derivation see the same code.
"""

from __future__ import annotations

import ast
import copy

SEPARATOR = "__"


def _decorator_names(func: ast.FunctionDef) -> set[str]:
    names = set()
    for d in func.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        names.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
    return names


class _Redirect(ast.NodeTransformer):
    def __init__(self, owners: set[str], cls: str, methods: set[str]):
        self.owners, self.cls, self.methods = owners, cls, methods

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in self.owners \
                and f.attr in self.methods:
            node.func = ast.copy_location(ast.Name(f"{self.cls}{SEPARATOR}{f.attr}", ast.Load()), f)
        return node


def _lift(cls: ast.ClassDef, method: ast.FunctionDef, methods: set[str]) -> ast.FunctionDef | None:
    decorators = _decorator_names(method)
    static = "staticmethod" in decorators
    if not static and not method.args.args:
        return None
    new = copy.deepcopy(method)
    first = None if static else new.args.args[0].arg
    if not static:
        new.args.args = new.args.args[1:]
    new.name = f"{cls.name}{SEPARATOR}{method.name}"
    new.decorator_list = [d for d, n in zip(new.decorator_list, decorators, strict=False)
                          if n not in ("staticmethod", "classmethod")]
    owners = {cls.name} | ({first} if first else set())
    new = _Redirect(owners, cls.name, methods).visit(new)
    if first and any(isinstance(n, ast.Name) and n.id == first for n in ast.walk(new)):
        return None  # still uses self: instance state
    return ast.fix_missing_locations(new)


def lift_methods(tree: ast.Module) -> tuple[ast.Module, dict[str, str]]:
    """``tree`` plus lifted copies of its classes' methods, and lifted name -> 'Class.method'."""
    body, names = list(tree.body), {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        methods = {m.name for m in cls.body if isinstance(m, ast.FunctionDef)}
        for m in cls.body:
            if isinstance(m, ast.FunctionDef):
                lifted = _lift(cls, m, methods)
                if lifted is not None:
                    body.append(lifted)
                    names[lifted.name] = f"{cls.name}.{m.name}"
    return ast.Module(body=body, type_ignores=[]), names
