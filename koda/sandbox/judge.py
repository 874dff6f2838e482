"""The judge: runs a tests file against a solution that lives in another process.

Why the verdict is trustworthy (the anti reward-hacking argument, in one place):

* The tests execute *here*, in the judge; the solution executes in a solver process with a
  different uid that cannot signal, ptrace or read this one, and whose memory never held the
  tests (``spawner.py``). The solution reaches a test only through values returned from its
  calls, decoded here into fresh builtin objects (``codec``): an ``__eq__`` that always answers
  True, a patched ``AssertionError``/``print``/``json``/``sys.stdout``, or a monkeypatched
  harness exist only in the solver and change nothing here. Comparisons, ``assert`` and
  truth tests all run on the judge's own objects; a non-plain return value is a ``Remote``
  that refuses to be compared.
* A test passes only when the judge itself ran it to the end. Exiting early (``sys.exit``,
  ``os._exit``), raising ``SystemExit``/``KeyboardInterrupt``/``GeneratorExit`` or any other
  ``BaseException``, dying by a signal, or running out of time turns into a ``Verdict`` for
  that test, never a pass. Output is not read at all: printing "passed" does nothing.
* Results leave through a pipe only the judge holds (the solver's fds are closed before it
  runs), one JSON line per test.

Each test gets a fresh solver, so state, threads or processes left by one test cannot reach
the next; the per-test timeout covers loading the solution plus the test itself.
"""

from __future__ import annotations

import ast
import builtins
import signal
import time
import traceback
from collections.abc import Callable

from koda.sandbox import codec, testfile
from koda.sandbox.remote import Remote, SolverSession, Verdict
from koda.sandbox.testfile import TestItem

Emit = Callable[[dict], None]


def judge_tests(session: SolverSession, source: str, timeout_s: float, emit: Emit,
                final: bool = True) -> None:
    """Run every test of ``source``; ``emit`` gets one result dict per test, in collect() order.

    ``final``: nothing runs in this sandbox afterwards (see ``SolverSession.end``).
    """
    tree = testfile.parse(source)
    items = testfile.collect(source, tree)
    _ExplainAsserts().visit(tree)
    signal.signal(signal.SIGALRM, _alarm)
    session.deadline = time.monotonic() + timeout_s
    try:
        first = session.start()
    except Verdict as verdict:
        return _all(items, emit, verdict.status, f"while loading the solution: {verdict.message}",
                    verdict.signal)
    if "syntax" in first:
        info = first["syntax"]
        return _all(items, emit, "syntax", f"SyntaxError: {info.get('msg')} (line {info.get('line')})")
    if "load_error" in first:
        info = first["load_error"]
        status = "memory" if info.get("type") == "MemoryError" else "error"
        session.end()
        return _all(items, emit, status, f"solution failed at import: {info.get('type')}: {info.get('msg')}")
    glb = _test_globals(session, first.get("ready") or {})
    by_name = {item.name: item for item in items}
    pending: str | None = None  # a failed set-up statement is reported on the next test

    for node in tree.body:
        code = compile(ast.Module([node], type_ignores=[]), testfile.TESTS_FILE, "exec")
        if isinstance(node, ast.Assert):
            item = by_name[f"assert@{node.lineno}"]
            emit(_run_one(session, item, timeout_s, lambda c=code: exec(c, glb), pending, source,
                          last=final and item is items[-1]))
            pending = None
            continue
        outcome = _guarded(session, timeout_s, lambda c=code: exec(c, glb))
        if outcome is not None:
            pending = f"set-up at line {node.lineno} failed: {outcome[1]}"
            session.end()
    for item in items:
        if not item.name.startswith("assert@"):
            emit(_run_one(session, item, timeout_s, glb[item.name], pending, source,
                          last=final and item is items[-1]))
            pending = None


def _test_globals(session: SolverSession, names: dict) -> dict:
    glb: dict = {"__name__": "__koda_tests__", "__builtins__": builtins, _EXPLAIN: _explain}
    for name, info in names.items():
        try:
            glb[name] = Remote(session, codec.Name(name)) if info == "call" else codec.decode(info["value"])
        except (codec.CodecError, TypeError, KeyError):
            continue
    return glb


def _run_one(session: SolverSession, item: TestItem, timeout_s: float, thunk, pending: str | None,
             source: str, last: bool) -> dict:
    start = time.monotonic()
    outcome = _guarded(session, timeout_s, thunk)
    session.end(last=last)  # kill this test's solver and everything it started
    result = {"name": item.name, "line": item.line, "status": "passed", "message": "", "signal": None,
              "duration_s": round(time.monotonic() - start, 6)}
    if outcome is not None:
        result["status"], result["message"], result["signal"] = outcome
        if outcome[0] == "failed":
            result["message"] = _failure_text(item, outcome[1], source)
    elif pending is not None:
        result["status"], result["message"] = "error", pending
    return result


def _guarded(session: SolverSession, timeout_s: float, thunk) -> tuple[str, str, int | None] | None:
    """Run test code; None on success, else (status, message, signal)."""
    session.fatal = None
    session.deadline = time.monotonic() + timeout_s
    signal.setitimer(signal.ITIMER_REAL, timeout_s + 0.5)  # for loops in the test code itself
    try:
        thunk()
        outcome = None
    except Verdict as verdict:
        outcome = (verdict.status, verdict.message, verdict.signal)
    except AssertionError as err:
        origin = getattr(err, "koda_from_solution", None)
        outcome = ("error", f"AssertionError raised by the solution: {err}", None) if origin else \
            ("failed", _assert_line(err), None)
    except MemoryError:
        outcome = ("memory", "MemoryError", None)
    except BaseException as err:  # noqa: BLE001 - every other exception is the test's error
        outcome = ("error", _describe(err), None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if session.fatal is not None:  # a verdict the test code caught with a bare except
        f = session.fatal
        outcome = (f.status, f.message, f.signal)
    return outcome


_EXPLAIN = "__koda_explain"
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}


class _ExplainAsserts(ast.NodeTransformer):
    """``assert L == R`` -> ``assert (l := L) == (r := R), explain(l, "==", r)``.

    A failing comparison then reports the values it compared (as pytest does), each operand
    still evaluated once and in order. Asserts with their own message are left alone.
    """

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = node.test
        if node.msg is not None or not isinstance(test, ast.Compare) or len(test.ops) != 1:
            return node
        if type(test.ops[0]) not in _OPS:
            return node
        names = [ast.Name(f"__koda_{side}", ast.Store()) for side in "lr"]
        left = ast.NamedExpr(names[0], test.left)
        right = ast.NamedExpr(names[1], test.comparators[0])
        load = [ast.Name(n.id, ast.Load()) for n in names]
        op = ast.Constant(_OPS[type(test.ops[0])])
        msg = ast.Call(ast.Name(_EXPLAIN, ast.Load()), [load[0], op, load[1]], [])
        new = ast.Assert(ast.Compare(left, test.ops, [right]), msg)
        return ast.fix_missing_locations(ast.copy_location(new, node))


def _explain(left, op: str, right) -> str:
    def short(value) -> str:
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 - a value whose repr fails still gets a description
            text = f"<{type(value).__name__}>"
        return text if len(text) <= 200 else text[:197] + "..."

    return f"{short(left)} {op} {short(right)} is false"


def _describe(err: BaseException) -> str:
    name = getattr(err, "koda_from_solution", None) or type(err).__name__
    text = str(err)
    if getattr(err, "koda_from_solution", None) and text.startswith(f"{name}: "):
        text = text[len(name) + 2:]
    return f"{name}: {text}" if text else name


def _assert_line(err: AssertionError) -> str:
    """``<line>|<assert message>``: the deepest line of the tests file in the traceback."""
    line = 0
    for frame, lineno in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_filename == testfile.TESTS_FILE:
            line = lineno
    return f"{line}|{err}"


def _failure_text(item: TestItem, detail: str, source: str) -> str:
    """The failing assert as written (and its message): what a person needs to see first."""
    line, _, message = detail.partition("|")
    is_assert = item.name.startswith("assert@")
    text = item.source if is_assert else f"line {line}: {source_line(source, int(line))}"
    return f"{text}  ({message})" if message else text


def _all(items: list[TestItem], emit: Emit, status: str, message: str, sig: int | None = None) -> None:
    for item in items:
        emit({"name": item.name, "line": item.line, "status": status, "message": message, "signal": sig,
              "duration_s": 0.0})


def _alarm(signum, frame):
    raise Verdict("timeout", "time limit exceeded (in the test code)")


def source_line(source: str, line: int) -> str:
    lines = source.splitlines()
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""

