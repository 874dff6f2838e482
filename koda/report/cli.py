"""``koda report``: PNG plots and a one-page HTML summary of one run, or several compared.

The command only parses arguments and prints; ``koda.report.build.write_report`` does the work.
"""

from __future__ import annotations

import argparse
import sys

from koda.report.build import write_report

EXAMPLES = """examples:
  koda report runs/smoke                       # -> runs/smoke/report/index.html
  koda report runs/a runs/b --output cmp/      # two runs on the same axes

User manual: docs/report.md"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="koda report", epilog=EXAMPLES,
                                     description="Write plots and an HTML summary of one or more runs.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories holding metrics.jsonl")
    parser.add_argument("--output", "-o", metavar="DIR",
                        help="where plots and index.html go (default RUN_DIR/report; required for several runs)")
    args = parser.parse_args(argv)
    report = write_report(args.runs, args.output)
    for warning in report.warnings:
        print(f"koda report: warning: {warning}", file=sys.stderr)
    print(f"wrote {len(report.plots)} plots and {report.index}")
    return 0
