"""The one judge: sample -> sandbox tests -> complexity verification, batched over a pool.

``koda generate --verify``, ``koda eval`` and the RL rewards all score code through
``judge``, so a sample gets the same verdict wherever it is judged. Three verdicts per
program, independent of each other:

- syntax: does the program parse (``koda.analysis.parse``)? A program that does not is not
  sent to the sandbox; each of its tests is a ``syntax`` result, which is what the sandbox
  itself reports for such a program.
- tests: the sandbox runs the tests against the program (``SandboxPool.map_tests``, several
  programs per sandbox, see ``batch``).
- complexity: ``koda verify`` on the program (static bound plus a measured fit in the same
  pool), only where the submission asks for it, since it costs seconds per program.

Bad programs are results, never exceptions; a sandbox that cannot run at all (a missing
isolation layer) is an error, since every program would hit it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from koda.errors import KodaError

# Verification runs the measurement program in the sandbox: a generous wall clock on top
# of the measurement budget, and room for the inputs the driver builds.
_MEASURE_SLACK_S = 15.0
_MEASURE_MEMORY_MB = 2048


@dataclass(frozen=True, slots=True)
class Submission:
    """One program to judge.

    program: the whole source (for a completion: prompt + completion); tests: a tests file
    (top-level asserts and ``def test_*``; None: no tests run); function: the function the
    verifier reads (None: the first recursive one); complexity: run the verifier at all.
    """

    program: str
    tests: str | None = None
    function: str | None = None
    complexity: bool = True


@dataclass(frozen=True, slots=True)
class Verdict:
    syntax_error: dict | None          # koda.analysis.parse.SyntaxIssue fields, None when it parses
    tests: object | None               # koda.sandbox.ExecReport, None when no tests were given
    complexity: dict | None            # ``koda verify --json`` fields or {"error": ...}; None: not asked

    @property
    def syntax_ok(self) -> bool:
        return self.syntax_error is None

    @property
    def passed(self) -> bool:
        """Every test passed (and there was at least one): HumanEval's notion of a correct sample."""
        t = self.tests
        return t is not None and t.total > 0 and t.passed == t.total

    def to_json(self) -> dict:
        return {"syntax_ok": self.syntax_ok, "syntax_error": self.syntax_error, "passed": self.passed,
                "tests": self.tests.to_json() if self.tests is not None else None,
                "complexity": self.complexity}


def judge(submissions: list[Submission], *, pool=None, policy=None, measure: bool = True,
          budget_s: float = 2.0, batch: int = 4, threads: int | None = None) -> list[Verdict]:
    """Judge every submission; the verdicts come back in order.

    pool: a ``koda.sandbox.SandboxPool`` (default: the process-wide one); policy: the
    ``SandboxPolicy`` for the tests; measure/budget_s: the verifier's empirical fit and its
    seconds per program; batch: programs judged one after another in one sandbox (saves the
    sandbox set-up, each program still gets fresh solver processes); threads: verifier
    threads (default: the pool's workers; the static part holds the GIL, the measurement
    waits on the sandbox).
    """
    from koda.analysis.parse import parse_source
    from koda.sandbox import SandboxPolicy, shared_pool
    from koda.sandbox.results import ExecReport, TestResult
    from koda.sandbox.testfile import collect

    if not 0 < budget_s <= 60:
        raise KodaError(f"budget_s {budget_s} must be in (0, 60] seconds")
    if batch < 1:
        raise KodaError(f"batch {batch} must be >= 1")
    pool = pool or shared_pool()
    parsed = [parse_source(s.program) for s in submissions]
    errors = [None if p.ok else p.error.as_dict() for p in parsed]
    runnable = [i for i, s in enumerate(submissions) if s.tests is not None and errors[i] is None]
    reports: list = [None] * len(submissions)
    for i, report in zip(runnable, pool.map_tests([(submissions[i].program, submissions[i].tests)
                                                   for i in runnable], policy=policy, batch=batch), strict=True):
        reports[i] = report
    for i, s in enumerate(submissions):
        if s.tests is not None and errors[i] is not None:
            message = f"SyntaxError: {errors[i]['message']} (line {errors[i]['line']})"
            try:
                items = collect(s.tests)
            except SyntaxError as err:
                raise KodaError(f"tests file has a syntax error at line {err.lineno}: {err.msg}") from None
            reports[i] = ExecReport.from_tests([TestResult(t.name, t.line, "syntax", message) for t in items])

    measure_policy = SandboxPolicy(timeout_s=budget_s + _MEASURE_SLACK_S, memory_mb=_MEASURE_MEMORY_MB)

    def verify(i: int) -> dict | None:
        s = submissions[i]
        if not s.complexity:
            return None
        from koda.analysis.report import verify_source

        try:
            return verify_source(s.program, s.function, measure=measure, budget_s=budget_s,
                                 runner=lambda src: pool.run_program(src, policy=measure_policy))
        except KodaError as err:  # no such function, or a function the reader refuses
            return {"error": str(err)}
        except RecursionError:  # nesting deeper than the interpreter's parser/reader allows
            return {"error": "program nests too deeply to analyse"}

    asked = [i for i, s in enumerate(submissions) if s.complexity]
    complexity: list = [None] * len(submissions)
    if asked:
        with ThreadPoolExecutor(threads or pool.workers, thread_name_prefix="koda-judge") as ex:
            for i, cx in zip(asked, ex.map(verify, asked), strict=True):
                complexity[i] = cx
    return [Verdict(errors[i], reports[i], complexity[i]) for i in range(len(submissions))]
