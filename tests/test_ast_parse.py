"""koda.ast_parse: every KODA parse goes through one lock (CPython 3.11's AST constructor keeps
its depth counter per interpreter, so parses on two threads at once can raise SystemError)."""

import re
import threading
from pathlib import Path

from koda import ast_parse

KODA = Path(__file__).resolve().parents[1] / "koda"


def test_no_module_calls_ast_parse_directly():
    bare = re.compile(r"\bast\.parse\(")
    offenders = [str(p.relative_to(KODA)) for p in KODA.rglob("*.py")
                 if p.name != "ast_parse.py" and any(bare.search(line) and not line.lstrip().startswith(("#", "``"))
                                                     for line in p.read_text().splitlines())]
    assert offenders == [], offenders


def test_parses_from_many_threads_at_once_all_succeed():
    source = "def f(x):\n" + "".join(f"    if x > {i}:\n" + "    " * (i + 2) + "x -= 1\n" for i in range(30)) \
        + "    return [[y for y in range(x)] for _ in range(2)]\n"
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(200):
                assert ast_parse.parse(source).body[0].name == "f"
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
