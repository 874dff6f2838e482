"""``koda verify FILE.py``: derive and measure the complexity of a recursive function.

    koda verify merge_sort.py --json
    koda verify algos.py --function fib --no-measure
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from koda.analysis.parse import parse_source
from koda.analysis.report import verify_tree
from koda.analysis.symbolic import polylog_text
from koda.errors import KodaError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda verify", description=__doc__.splitlines()[0])
    p.add_argument("file", help="Python source file")
    p.add_argument("--function", help="function to verify (default: the first recursive one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-measure", action="store_true", help="skip the sandboxed measurement")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of measurement (default 3)")
    return p


def _read(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise KodaError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KodaError(f"{path} is not UTF-8 text") from None


def _human(r: dict) -> str:
    emp = r["empirical"] or {}
    lines = [f"function    {r['function']}  (n = {r['size']})",
             f"recurrence  {r['recurrence'] or 'undecided'}",
             f"bound       {r['bound_text'] or 'undecided: ' + str(r['undecided_reason'])}"]
    if emp.get("kind") == "polylog":
        cls = polylog_text(emp["n_exponent"], emp["log_exponent"])
        lines.append(f"measured    {cls} over {len(emp['points'])} sizes "
                     f"(fitted exponent {emp['n_exponent']})")
    elif emp.get("kind") == "exponential":
        lines.append(f"measured    {emp['base']}^n over {len(emp['points'])} sizes")
    elif r["empirical"] is not None:
        lines.append(f"measured    nothing: {emp.get('error')}")
    lines.append(f"agree       {r['agree']} ({r['agreement']})")
    b = r["betti"]
    lines.append(f"graph       beta0={b['beta0']} beta1={b['beta1']} "
                 f"lambda2={r['laplacian_spectrum_summary']['algebraic_connectivity']:.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.budget <= 0 or args.budget > 60:
        raise KodaError(f"--budget {args.budget} must be in (0, 60] seconds")
    parsed = parse_source(_read(args.file), args.file)
    if not parsed.ok:
        e = parsed.error
        what = {"truncated": "program is cut off", "syntax": "syntax error"}.get(e.kind, "unreadable")
        raise KodaError(f"{args.file}:{e.line}:{e.column}: {what}: {e.message}")
    result = verify_tree(parsed.tree, args.function, measure=not args.no_measure, budget_s=args.budget)
    print(json.dumps(result, ensure_ascii=False) if args.json else _human(result))
    return 0
