"""Build the task set: drafts -> tasks with hidden tests, split into train and held-out.

Determinism: each family draws from ``random.Random(f"{seed}:{family}")`` (a string seed
is hashed with SHA-512 by ``random``, so the set does not depend on PYTHONHASHSEED or on
which other families are built).

Disjointness: two drafts are the same instance when their references have the same
*normal form* (docstrings dropped, every identifier renamed in order of first use, then
``ast.dump``) or their prompts the same normalised text. A family keeps drawing until it
has as many distinct instances as asked, then the first ``heldout`` of them (in a seeded
shuffle) form the held-out split; no normal form or prompt text is shared between splits
or repeated within one.

Expected outputs are computed by running the reference here, in this process: the
references are KODA's own code, not generated code (``koda tasks check`` then runs every
reference against its tests in the sandbox).
"""

from __future__ import annotations

import ast
import copy
import random
import re

from koda.errors import KodaError
from koda.tasks.family import Draft, Family
from koda.tasks.numeric import FAMILIES as NUMERIC
from koda.tasks.schema import SPLITS, Task
from koda.tasks.sequences import FAMILIES as SEQUENCES

FAMILIES: dict[str, Family] = {f.name: f for f in (*NUMERIC, *SEQUENCES)}
MAX_DRAWS = 400  # per family: a family that cannot make enough distinct instances says so


def family_names(selected: list[str] | None = None) -> list[str]:
    """All family names, or ``selected`` checked against them (one-line error on an unknown one)."""
    if not selected:
        return list(FAMILIES)
    for name in selected:
        if name not in FAMILIES:
            raise KodaError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}")
    return list(dict.fromkeys(selected))


class _Rename(ast.NodeTransformer):
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node):
        node.name = self._new(node.name)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node


def normal_form(program: str) -> str:
    """The reference with docstrings dropped and identifiers renamed (v0, v1, ...) by first use.

    Builtins are renamed too: two programs that differ only in which names they use are
    one instance."""
    return ast.dump(_Rename().visit(ast.parse(program)))


def normal_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _tests(draft: Draft) -> str:
    """A HumanEval-style ``check(candidate)`` with one assert per case, outputs from the reference."""
    scope: dict = {}
    exec(compile(draft.prompt() + draft.body, f"<reference {draft.name}>", "exec"), scope)  # noqa: S102 (our code)
    fn = scope[draft.name]
    lines, seen = ["def check(candidate):"], set()
    for case in draft.cases:
        args = ", ".join(repr(a) for a in case)
        if args in seen:  # a family's edge cases can coincide (s == 1)
            continue
        seen.add(args)
        lines.append(f"    assert candidate({args}) == {fn(*copy.deepcopy(case))!r}")
    return "\n".join(lines) + "\n"


def _draws(family: Family, seed: int, count: int) -> list[Draft]:
    rng = random.Random(f"{seed}:{family.name}")
    found: dict[str, Draft] = {}
    texts: set[str] = set()
    for _ in range(MAX_DRAWS):
        draft = family.make(rng)
        key, text = normal_form(draft.prompt() + draft.body), normal_text(draft.prompt())
        if key in found or text in texts:
            continue
        found[key] = draft
        texts.add(text)
        if len(found) == count:
            return list(found.values())
    raise KodaError(f"task family {family.name!r} made only {len(found)} distinct instances in {MAX_DRAWS} draws, "
                    f"{count} asked")


def build_tasks(seed: int = 0, train: int = 8, heldout: int = 3, families: list[str] | None = None) -> list[Task]:
    """``train`` + ``heldout`` distinct tasks per family, train split first in family order."""
    if train < 0 or heldout < 0 or train + heldout == 0:
        raise KodaError(f"per-family counts train={train}, heldout={heldout} must be >= 0 and not both 0")
    by_split: dict[str, list[Task]] = {s: [] for s in SPLITS}
    for name in family_names(families):
        family = FAMILIES[name]
        drafts = _draws(family, seed, train + heldout)
        random.Random(f"{seed}:{name}:split").shuffle(drafts)
        for i, draft in enumerate(drafts):
            split = "heldout" if i < heldout else "train"
            index = i if i < heldout else i - heldout
            by_split[split].append(Task(
                task_id=f"KODA/{split}/{name}/{index}", prompt=draft.prompt(), canonical_solution=draft.body,
                test=_tests(draft), entry_point=draft.name, family=name, split=split, style=family.style,
                target=draft.target))
    return [t for s in SPLITS for t in by_split[s]]
