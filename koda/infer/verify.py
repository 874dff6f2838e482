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

_NEEDED = ("koda.sandbox", "koda.analysis.report")  # what koda.judge imports


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


def verify_programs(programs: list[str], tests: list[str | None], measure: bool = True,
                    budget_s: float = 2.0) -> list[dict]:
    """-> per program {"tests": ExecReport JSON or None, "complexity": ``koda verify --json`` fields
    or {"error": ...}}, all judged in one batch by ``koda.judge.judge``.

    A sample with no function, or one the verifier cannot read, is a result, not an error:
    generated code is often broken, and one bad sample must not stop the others. Sandbox
    failures (a missing isolation layer) are errors, since every sample would hit them.
    """
    require_judges()
    from koda.judge import Submission, judge

    verdicts = judge([Submission(p, t) for p, t in zip(programs, tests, strict=True)], measure=measure,
                     budget_s=budget_s)
    return [{"tests": v.tests.to_json() if v.tests is not None else None, "complexity": v.complexity}
            for v in verdicts]


def verify_program(program: str, tests: str | None, measure: bool = True, budget_s: float = 2.0) -> dict:
    """``verify_programs`` for one program."""
    return verify_programs([program], [tests], measure, budget_s)[0]
