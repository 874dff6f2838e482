"""Graphs of a program: the AST tree, and the AST plus data-flow and call edges.

Node ids are the AST nodes' positions in a pre-order walk, so two parses of one source give
the same graph. Data flow is a cheap reaching-definitions pass (branches merge their
definitions, loop bodies are visited twice so loop-carried definitions reach their uses);
it over-approximates, which is what a structural fingerprint wants. Graphs are undirected
``networkx.Graph`` objects: the spectral and Hodge figures are defined on undirected graphs.
"""

from __future__ import annotations

import ast

import networkx as nx

Env = dict[str, set[int]]


def ast_graph(root: ast.AST) -> nx.Graph:
    """The syntax tree as a graph: one vertex per AST node (attrs ``type``, ``line``).

    Context markers (``Load``/``Store``/``Del``) are left out: CPython shares one instance
    of each across the whole tree, so they are not tree nodes, and they carry no structure.
    Operators (``Add``, ``Lt``, ...) are shared the same way but do carry meaning, so each
    occurrence becomes its own vertex, numbered by position rather than by identity.
    """
    graph, index = nx.Graph(), {}
    stack: list[tuple[ast.AST, int | None]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        i = graph.number_of_nodes()
        graph.add_node(i, type=type(node).__name__, line=getattr(node, "lineno", None))
        index.setdefault(id(node), i)
        if parent is not None:
            graph.add_edge(parent, i, kind="ast")
        children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.expr_context)]
        stack.extend((c, i) for c in reversed(children))
    graph.graph["index"] = index
    return graph


class _Flow:
    """Adds definition -> use edges and call -> callee edges to an AST graph."""

    def __init__(self, graph: nx.Graph, functions: dict[str, int]):
        self.graph, self.index, self.functions = graph, graph.graph["index"], functions

    def _edge(self, a: int, b: int, kind: str) -> None:
        if a != b and not self.graph.has_edge(a, b):
            self.graph.add_edge(a, b, kind=kind)

    def expr(self, node: ast.AST | None, env: Env) -> None:
        if node is None:
            return
        walked = list(ast.walk(node))
        for sub in walked:  # comprehension targets, walrus and lambda arguments bind first
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                env[sub.id] = {self.index[id(sub)]}
            elif isinstance(sub, ast.arg):
                env[sub.arg] = {self.index[id(sub)]}
        for sub in walked:
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                for d in env.get(sub.id, ()):
                    self._edge(d, self.index[id(sub)], "flow")
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in self.functions:
                self._edge(self.index[id(sub)], self.functions[sub.func.id], "call")

    def bind(self, target: ast.AST, env: Env) -> None:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                env[sub.id] = {self.index[id(sub)]}
            elif isinstance(sub, ast.Name | ast.Attribute | ast.Subscript) and sub is not target:
                self.expr(sub, env) if isinstance(sub.ctx, ast.Load) else None
        if isinstance(target, ast.Attribute | ast.Subscript):
            self.expr(target.value, env)

    def block(self, stmts: list[ast.stmt], env: Env) -> Env:
        for stmt in stmts:
            env = self.stmt(stmt, env)
        return env

    @staticmethod
    def merge(*envs: Env) -> Env:
        out: Env = {}
        for env in envs:
            for name, defs in env.items():
                out.setdefault(name, set()).update(defs)
        return out

    def stmt(self, stmt: ast.stmt, env: Env) -> Env:
        env = {k: set(v) for k, v in env.items()}
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = dict(env)
            for arg in ast.walk(stmt.args):
                if isinstance(arg, ast.arg):
                    inner[arg.arg] = {self.index[id(arg)]}
            self.block(stmt.body, inner)
            env[stmt.name] = {self.index[id(stmt)]}
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            self.expr(stmt.value, env)
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                self.bind(target, env)
        elif isinstance(stmt, ast.AugAssign):
            self.expr(stmt.value, env)
            if isinstance(stmt.target, ast.Name):
                for d in env.get(stmt.target.id, ()):
                    self._edge(d, self.index[id(stmt.target)], "flow")
            self.bind(stmt.target, env)
        elif isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
            if isinstance(stmt, ast.While):
                self.expr(stmt.test, env)
            else:
                self.expr(stmt.iter, env)
                self.bind(stmt.target, env)
            once = self.block(stmt.body, env)
            twice = self.block(stmt.body, self.merge(env, once))  # loop-carried definitions
            env = self.merge(env, once, twice, self.block(stmt.orelse, self.merge(env, twice)))
        elif isinstance(stmt, ast.If):
            self.expr(stmt.test, env)
            env = self.merge(self.block(stmt.body, env), self.block(stmt.orelse, env))
        elif isinstance(stmt, ast.Try):
            body = self.block(stmt.body, env)
            handlers = [self.block(h.body, self.merge(env, body)) for h in stmt.handlers]
            env = self.block(stmt.finalbody, self.merge(body, self.block(stmt.orelse, body), *handlers))
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            for item in stmt.items:
                self.expr(item.context_expr, env)
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, env)
            env = self.block(stmt.body, env)
        elif isinstance(stmt, ast.ClassDef):
            env = self.merge(env, self.block(stmt.body, env))
            env[stmt.name] = {self.index[id(stmt)]}
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                env[(alias.asname or alias.name).split(".")[0]] = {self.index[id(alias)]}
        else:
            for child in ast.iter_child_nodes(stmt):
                self.expr(child, env)
        return env


def program_graph(root: ast.AST, module: ast.Module | None = None) -> nx.Graph:
    """AST edges plus definition->use (``flow``) and call->callee (``call``) edges.

    ``module`` supplies the functions a call may target when ``root`` is one function; a
    recursive call therefore closes a cycle back to its own ``FunctionDef``.
    """
    graph = ast_graph(root)
    index = graph.graph["index"]
    scope = module if module is not None else root
    functions = {
        n.name: index[id(n)]
        for n in getattr(scope, "body", [root])
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and id(n) in index
    }
    if isinstance(root, ast.FunctionDef | ast.AsyncFunctionDef):
        functions[root.name] = index[id(root)]
    flow = _Flow(graph, functions)
    flow.block(root.body if isinstance(root, ast.Module) else [root], {})
    return graph
