"""``koda tasks``: export the task set, or check it.

    koda tasks export --out tasks.jsonl                   # both splits, 8 + 3 tasks per family
    koda tasks export --out train.jsonl --split train --documents   # {"text": prompt + reference}
    koda tasks check                                      # references pass, targets derive, splits disjoint
    koda tasks check --file my_tasks.jsonl --no-verify --json

``--documents`` writes one {"text": ...} line per task (prompt + reference solution), the
form ``koda preprocess --sources FILE.jsonl`` reads: the CE fine-tuning data of
``koda train --init-from``; ``--both-ways`` adds, for the open-method families, the same prompt
answered by the naive program. The task file schema is in docs/tasks.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from koda.errors import KodaError
from koda.tasks.build import build_tasks
from koda.tasks.schema import SPLITS, read_tasks, write_tasks


def _source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", help="a tasks JSON-lines file instead of the generated set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=8, help="train tasks per family")
    p.add_argument("--train-up-to", action="store_true",
                   help="--train is a ceiling: each family gives as many distinct train tasks as it has")
    p.add_argument("--heldout", type=int, default=3, help="held-out tasks per family")
    p.add_argument("--families", help="comma-separated family names (default: all)")
    p.add_argument("--split", choices=(*SPLITS, "all"), default="all")


def load(args) -> list:
    families = args.families.split(",") if args.families else None
    if args.file:
        tasks = read_tasks(args.file)
        if families:
            from koda.tasks.build import family_names

            family_names(families)
            tasks = [t for t in tasks if t.family in families]
    else:
        tasks = build_tasks(args.seed, args.train, args.heldout, families, train_up_to=args.train_up_to)
    return tasks if args.split == "all" else [t for t in tasks if t.split == args.split]


def _documents(tasks: list, both_ways: bool) -> list[str]:
    """prompt + reference per task; with ``both_ways`` an open-method task also prompt + its naive
    program, so a model trained on them samples either method (docs/rl.md, complexity signal)."""
    from koda.tasks.open_method import FAMILIES as OPEN
    from koda.tasks.open_method import naive_body

    open_names = {f.name for f in OPEN}
    texts = []
    for t in tasks:
        texts.append(t.program())
        if both_ways and t.family in open_names:
            texts.append(t.program(naive_body(t)))
    return texts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda tasks", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    sub = p.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write the tasks as JSON lines")
    _source(export)
    export.add_argument("--out", required=True)
    export.add_argument("--documents", action="store_true", help="write {'text': prompt + reference} lines")
    export.add_argument("--both-ways", action="store_true",
                        help="with --documents: a task of an open-method family (power_open, recurrence_open) "
                             "gives a second document answered by the naive program")
    check = sub.add_parser("check", help="references pass, targets derive and agree, splits disjoint")
    _source(check)
    check.add_argument("--no-verify", action="store_true", help="skip the complexity checks")
    check.add_argument("--budget", type=float, default=2.0, help="seconds of measurement per target")
    check.add_argument("--json", action="store_true")
    return p


def _table(rows: list[dict]) -> str:
    head = ("family", "train", "heldout", "target", "refs pass", "derived", "agree")
    lines = [head] + [(r["family"], str(r["train"]), str(r["heldout"]), r["target"],
                       f"{r['references_pass']}/{r['train'] + r['heldout']}",
                       f"{r['targets_derived']}/{r['targets']}" if r["targets"] else "-",
                       f"{r['empirical_agrees']}/{r['targets']}" if r["targets"] else "-") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    tasks = load(args)
    if not tasks:
        raise KodaError("no tasks selected")
    if args.action == "export":
        if args.both_ways and not args.documents:
            raise KodaError("--both-ways writes documents: add --documents")
        if args.documents:
            texts = _documents(tasks, args.both_ways)
            Path(args.out).write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
            print(f"wrote {len(texts)} documents of {len(tasks)} tasks to {args.out}")
            return 0
        write_tasks(tasks, args.out)
        print(f"wrote {len(tasks)} tasks to {args.out}")
        return 0
    from koda.tasks.check import check_tasks

    report = check_tasks(tasks, verify=not args.no_verify, budget_s=args.budget)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        print(_table(report.family_table()))
        for problem in report.problems:
            print(f"problem: {problem}")
        print(f"{len(tasks)} tasks: {'ok' if report.ok else f'{len(report.problems)} problem(s)'}")
    return 0 if report.ok else 1
