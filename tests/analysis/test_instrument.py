import ast

from koda.analysis.instrument import instrument


def run(source, name, *args):
    """Execute the instrumented module (trusted test code) and return (result, ops, calls)."""
    from koda.analysis.instrument import PRELUDE

    glb: dict = {}
    exec(compile(PRELUDE + "\n" + instrument(ast.parse(source)), "<instrumented>", "exec"), glb)
    result = glb[name](*args)
    return result, glb["_koda_ops"][0], glb["_koda_ops"][1]


def test_statements_and_calls_are_counted_exactly():
    src = "def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
    # s = 0, the for statement, return: 3; the body runs n times
    assert run(src, "f", 10) == (45, 13, 1)
    fib = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"
    value, ops, calls = run(fib, "fib", 10)
    assert value == 55 and calls == 177  # 2 F(11) - 1 calls
    assert ops == 2 * calls - 1 + 1  # every call runs the if, then one return


def test_work_done_in_c_is_counted_per_element():
    src = "def f(xs):\n    a = xs[:5]\n    b = sum(xs)\n    c = sorted(xs)\n    return 3 in xs\n"
    _, ops, _ = run(src, "f", list(range(16)))
    # 4 statements + slice 5 + sum 16 + sorted 16*4 + 'in' scan 16
    assert ops == 4 + 5 + 16 + 64 + 16


def test_comprehensions_count_items_and_semantics_are_kept():
    src = "def f(xs):\n    return [x * 2 for x in xs if x % 2]\n"
    result, ops, _ = run(src, "f", list(range(10)))
    assert result == [2, 6, 10, 14, 18]
    assert ops == 1 + 10 + 5 * 0  # one statement, ten items drawn; x * 2 builds no sequence
