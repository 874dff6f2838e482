"""``--verify``: judge each sample with the sandbox (tests) and the complexity verifier.

Both judges live in other packages (``koda.sandbox``, ``koda.analysis``) that pull in their
own dependencies; they are imported only when verification is asked for, and their absence
is a one-line error rather than an ImportError at start-up.

The program judged is prompt + completion: a prompt is normally the function's signature
and docstring, and the completion only its body.
"""

from __future__ import annotations

import importlib

from koda.errors import KodaError

_NEEDED = ("koda.sandbox", "koda.analysis.report")


def missing_judges() -> list[str]:
    """The judge modules this build lacks (empty when --verify can run)."""
    missing = []
    for name in _NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_judges() -> None:
    missing = missing_judges()
    if missing:
        raise KodaError(f"--verify needs {' and '.join(missing)}, which this build does not have "
                        "(they come with 'koda exec' / 'koda verify')")


def verify_program(program: str, tests: str | None, measure: bool = True, budget_s: float = 2.0) -> dict:
    """-> {"tests": ExecReport JSON or None, "complexity": ``koda verify --json`` fields or {"error": ...}}.

    A sample with no function, or one the verifier cannot read, is a result, not an error:
    generated code is often broken, and one bad sample must not stop the others. Sandbox
    failures (a missing isolation layer) are errors, since every sample would hit them.
    """
    require_judges()
    from koda.analysis.report import verify_source
    from koda.sandbox import run_tests

    result: dict = {"tests": run_tests(program, tests).to_json() if tests is not None else None}
    try:
        result["complexity"] = verify_source(program, measure=measure, budget_s=budget_s)
    except KodaError as err:
        result["complexity"] = {"error": str(err)}
    return result
