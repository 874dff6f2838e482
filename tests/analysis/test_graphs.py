import ast

import networkx as nx

from koda.analysis.graphs import ast_graph, program_graph

SRC = """
def fib(n):
    if n < 2:
        return n
    a = fib(n - 1)
    return a + fib(n - 2)
"""


def _count_nodes(tree):
    return sum(1 for n in ast.walk(tree) if not isinstance(n, ast.expr_context))


def test_ast_graph_is_a_tree_over_the_syntax_nodes():
    tree = ast.parse(SRC)
    g = ast_graph(tree)
    assert nx.is_tree(g)
    # ast.walk visits shared operator singletons once per occurrence too
    assert g.number_of_nodes() == _count_nodes(tree)
    assert g.nodes[0]["type"] == "Module"


def test_program_graph_adds_definition_use_and_call_edges():
    tree = ast.parse(SRC)
    func = tree.body[0]
    g = program_graph(func, tree)
    kinds = nx.get_edge_attributes(g, "kind")
    flow = [e for e, k in kinds.items() if k == "flow"]
    calls = [e for e, k in kinds.items() if k == "call"]
    # parameter n is used four times (n < 2, return n, n - 1, n - 2); a is used once
    arg_n = next(v for v, d in g.nodes(data=True) if d["type"] == "arg")
    assert sum(arg_n in e for e in flow) == 4
    assert len(flow) == 5
    assert len(calls) == 2  # two recursive calls point back at the FunctionDef (vertex 0)
    assert all(0 in e for e in calls)
    assert g.number_of_edges() == g.number_of_nodes() - 1 + 7


def test_loop_carried_definitions_reach_their_uses():
    tree = ast.parse("def f(n):\n    s = 0\n    for i in range(n):\n        s = s + i\n    return s\n")
    g = program_graph(tree.body[0], tree)
    stores = [v for v, d in g.nodes(data=True) if d["type"] == "Name"]
    flow = {e for e, k in nx.get_edge_attributes(g, "kind").items() if k == "flow"}
    # the store inside the loop reaches the load of s in the next iteration: a flow self-cycle
    assert len(flow) >= 5 and len(stores) >= 5
    assert nx.cycle_basis(g)  # data flow closes cycles in the syntax tree
