import ast

import pytest

from koda.analysis.parse import parse_source, pick_function


@pytest.mark.parametrize(
    ("source", "kind", "line"),
    [
        ("def f(x):\n    return (x +", "truncated", 3),
        ('def f(x):\n    s = """abc', "truncated", 2),
        ("def f(x):", "truncated", 1),
        ("x = 1\n  y = 2\n", "syntax", 2),
        ("def f(x):\n    return x +\n", "syntax", 2),
        ("x = 1\0", "syntax", 1),
    ],
)
def test_bad_programs_are_results_with_positions(source, kind, line):
    result = parse_source(source)
    assert not result.ok and result.tree is None
    assert (result.error.kind, result.error.line) == (kind, line)
    assert result.error.message


def test_undecodable_bytes_and_deep_nesting_do_not_raise():
    assert parse_source(b"x = '\xff'").error.kind == "invalid"
    deep = parse_source("(" * 5000 + ")" * 5000)
    assert not deep.ok and deep.error.line >= 1


def test_good_program_parses_and_function_is_picked():
    src = "def helper(x):\n    return x\n\ndef rec(n):\n    return rec(n - 1) if n else 0\n"
    result = parse_source(src)
    assert result.ok and isinstance(result.tree, ast.Module)
    assert pick_function(result.tree).name == "rec"  # the recursive one, not the first
    assert pick_function(result.tree, "helper").name == "helper"
    assert pick_function(result.tree, "absent") is None
