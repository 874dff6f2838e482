"""``koda exec``: judge a solution file against a tests file in the sandbox.

    koda exec --solution SOL.py --tests TESTS.py [--timeout S] [--memory-mb M] [--json]
              [--allow-weaker-isolation]

Prints one JSON object with ``--json`` (fields in docs/sandbox.md), else a short table. Exits 0
when the run completed (whatever the tests said), 2 with a one-line message on unreadable
input or when an isolation layer is missing and the weaker mode was not accepted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from koda.errors import KodaError
from koda.sandbox import run_tests
from koda.sandbox.policy import SandboxPolicy
from koda.sandbox.results import ExecReport


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda exec", description="Run a solution against tests in the sandbox.")
    p.add_argument("--solution", required=True, type=Path, help="Python file with the solution")
    p.add_argument("--tests", required=True, type=Path,
                   help="Python file of top-level asserts and/or def test_*() functions")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per test (default 5)")
    p.add_argument("--memory-mb", type=int, default=512,
                   help="address-space cap of the solution (default 512)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--allow-weaker-isolation", action="store_true",
                   help="run even if this host lacks some isolation layer (they are named in the error)")
    return p


def read_source(path: Path, what: str) -> str:
    """The file's text, or a one-line error saying why it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KodaError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise KodaError(f"{what} file {path} is a directory") from None
    except OSError as err:
        raise KodaError(f"cannot read {what} file {path}: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KodaError(f"{what} file {path} is not UTF-8 (byte {err.start})") from None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    policy = SandboxPolicy(timeout_s=args.timeout, memory_mb=args.memory_mb,
                           allow_weaker=args.allow_weaker_isolation)
    solution = read_source(args.solution, "solution")
    tests = read_source(args.tests, "tests")
    report = run_tests(solution, tests, policy=policy)
    print(json.dumps(report.to_json()) if args.json else format_table(report))
    return 0


def format_table(report: ExecReport) -> str:
    width = max((len(t.name) for t in report.tests), default=4)
    lines = [f"{'test':<{width}}  {'status':<8}  {'time':>7}  detail"]
    for t in report.tests:
        detail = t.message.replace("\n", " ")
        lines.append(f"{t.name:<{width}}  {t.status:<8}  {t.duration_s:>6.3f}s  {detail[:100]}")
    lines.append(f"{report.passed}/{report.total} passed  (run status: {report.status})")
    return "\n".join(lines)
