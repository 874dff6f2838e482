"""The ``koda`` command: a thin dispatcher to one library entry point per subcommand.

Each subcommand lives in its own module with a ``main(argv) -> int`` function and its own
argparse parser, imported only when that subcommand runs, so ``koda exec`` does not pay for
importing DeepSpeed and a broken optional dependency breaks only the commands that need it.
"""

from __future__ import annotations

import importlib
import sys

from koda.errors import KodaError

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("koda.train.cli", "train a model (ZeRO-3 + expert parallel) from a run config"),
    "tokenizer": ("koda.data.tokenizer_cli", "train a sentencepiece tokenizer on a text corpus"),
    "preprocess": ("koda.data.preprocess_cli", "turn text/jsonl files into token shards (.bin/.idx)"),
    "init-check": ("koda.model.init_cli", "report the singular-value spectrum of a model's initial weights"),
    "exec": ("koda.sandbox.cli", "run a solution against tests in the sandbox"),
    "verify": ("koda.analysis.cli", "derive and measure the complexity of a recursive function"),
    "launch": ("koda.topology.launch_cli", "launch a multi-node job from a 4-D torus topology file"),
    "topology": ("koda.topology.cli", "show a topology file, its placement and latency model"),
    "report": ("koda.report.cli", "write plots and an HTML summary of one or more runs"),
    "convert": ("koda.checkpoint.convert_cli", "convert a ZeRO-3/AutoEP checkpoint to a standalone model"),
    "compress": ("koda.checkpoint.compress_cli", "Tucker-compress the expert weights of a standalone model"),
    "generate": ("koda.infer.cli", "sample from a standalone model or a checkpoint"),
    "tasks": ("koda.tasks.cli", "export or check the task set (train / held-out function-writing tasks)"),
    "eval": ("koda.evaluate.cli", "pass@k, complexity and syntax of a model's samples on a task set"),
    "scaling": ("koda.scaling.cli", "fit loss = a*C^(-b) with breakpoints to runs or points; extrapolate"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS), default=0)
    lines = ["usage: koda <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'koda <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"koda: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except KodaError as err:
        print(f"koda {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
