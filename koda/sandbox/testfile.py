"""What counts as one test in a TESTS.py file.

Two styles, mixable: every top-level ``assert`` statement is one test, and every top-level
``def test_*()`` is one test. Other top-level statements (imports, helpers, ``x = f(1)``) are
set-up that runs in order. The parent parses the file too, so a broken tests file is the user's
error before anything runs, and so every test is listed even when the sandbox dies mid-run.
"""

from __future__ import annotations

import ast
from collections import namedtuple

from koda import ast_parse

TESTS_FILE = "tests.py"


# name: "test_foo", or "assert@12" for a top-level assert on line 12; line; source: the assert
# statement, or the def line. A namedtuple: the zygote imports this module and stays small.
TestItem = namedtuple("TestItem", ["name", "line", "source"])


def parse(source: str) -> ast.Module:
    """Raises ``SyntaxError`` with the position on a broken file."""
    return ast_parse.parse(source, filename=TESTS_FILE)


def collect(source: str, tree: ast.Module | None = None) -> list[TestItem]:
    """Top-level asserts in file order, then test functions in file order (the run order)."""
    tree = tree or parse(source)
    asserts, functions = [], []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            text = ast.get_source_segment(source, node) or "assert"
            asserts.append(TestItem(f"assert@{node.lineno}", node.lineno, text))
        elif isinstance(node, ast.FunctionDef) and (node.name == "test" or node.name.startswith("test_")):
            functions.append(TestItem(node.name, node.lineno, f"def {node.name}()"))
    return asserts + functions
