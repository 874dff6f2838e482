"""Build the task set: drafts -> tasks with hidden tests, split into train and held-out.

Determinism: each family and split draws from ``random.Random(f"{seed}:{family}:{split}")``
(a string seed is hashed with SHA-512 by ``random``, so the set does not depend on
PYTHONHASHSEED). The held-out split is drawn first and depends only on the seed, the
family and ``heldout``: evaluating at ``--train 8`` or ``--train 64`` scores the same
held-out tasks. A family's train split can depend on which other families are built (its
drafts are compared with their held-out tasks too).

Disjointness: two drafts are the same instance when their references have the same
*normal form* (docstrings dropped, every identifier renamed in order of first use, then
``ast.dump``) or their prompts the same normalised text, and a train draft is also the
same instance as a held-out task when its reference passes that task's tests
(``koda.tasks.behaviour``). No normal form or prompt text repeats in the whole set.

Expected outputs are computed by running the reference here, in this process: the
references are KODA's own code, not generated code (``koda tasks check`` then runs every
reference against its tests in the sandbox).
"""

from __future__ import annotations

import ast
import copy
import random
import re

from koda import ast_parse
from koda.errors import KodaError
from koda.tasks.family import Draft, Family
from koda.tasks.numeric import FAMILIES as NUMERIC
from koda.tasks.open_method import FAMILIES as OPEN_METHOD
from koda.tasks.schema import Task
from koda.tasks.sequences import FAMILIES as SEQUENCES

FAMILIES: dict[str, Family] = {f.name: f for f in (*NUMERIC, *SEQUENCES)}   # the default task set
# built only when named (``--families``, ``rl.task_families``): koda.tasks.open_method
EXTRA_FAMILIES: dict[str, Family] = {f.name: f for f in OPEN_METHOD}
KNOWN_FAMILIES = FAMILIES | EXTRA_FAMILIES
MAX_DRAWS = 400  # per family and split, plus 20 per task asked: a family that cannot make enough says so
# A family is taken as exhausted after this many draws in a row bring nothing new (coupon
# collecting: the last few instances of a large family would cost most of the draws); without
# ``up_to`` that is the error, at once rather than after MAX_DRAWS.
EXHAUSTED_AFTER = 2000


def family_names(selected: list[str] | None = None) -> list[str]:
    """The default families' names, or ``selected`` checked against every known family
    (one-line error on an unknown one)."""
    if not selected:
        return list(FAMILIES)
    for name in selected:
        if name not in KNOWN_FAMILIES:
            raise KodaError(f"unknown task family {name!r}; known: {', '.join(KNOWN_FAMILIES)}")
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
    return ast.dump(_Rename().visit(ast_parse.parse(program)))


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


def _max_draws(count: int) -> int:
    return MAX_DRAWS + 20 * count


def _distinct(family: Family, rng: random.Random, count: int, keys: set[str], texts: set[str],
              accept=lambda draft: True, up_to: bool = False) -> list[Draft]:
    """``count`` drafts whose normal form and prompt text are new to ``keys``/``texts`` (both
    updated) and that ``accept`` lets through, in draw order. ``up_to``: as many as the family
    gives, at most ``count``, instead of an error when it gives fewer."""
    found: list[Draft] = []
    misses = draws = 0
    while len(found) < count and misses < EXHAUSTED_AFTER and draws < _max_draws(count):
        draws += 1
        draft = family.make(rng)
        key, text = normal_form(draft.prompt() + draft.body), normal_text(draft.prompt())
        if key in keys or text in texts or not accept(draft):
            misses += 1
            continue
        misses = 0
        keys.add(key)
        texts.add(text)
        found.append(draft)
    if len(found) < count and not up_to:
        raise KodaError(f"task family {family.name!r} made only {len(found)} distinct instances in "
                        f"{draws} draws, {count} asked")
    return found


def _task(draft: Draft, family: Family, split: str, index: int) -> Task:
    return Task(task_id=f"KODA/{split}/{family.name}/{index}", prompt=draft.prompt(), canonical_solution=draft.body,
                test=_tests(draft), entry_point=draft.name, family=family.name, split=split, style=family.style,
                target=draft.target)


def build_tasks(seed: int = 0, train: int = 8, heldout: int = 3, families: list[str] | None = None,
                train_up_to: bool = False) -> list[Task]:
    """``train`` + ``heldout`` distinct tasks per family, train split first in family order.
    ``train_up_to``: ``train`` is a ceiling, each family gives what it has (large fine-tuning
    sets: the families differ tenfold in size); the held-out split is unchanged by it.

    Held-out first, each family from its own stream ``f"{seed}:{family}:heldout"``: the
    held-out split is fixed by the seed (a larger ``heldout`` extends it) and never depends
    on ``train``. Train tasks then come from ``f"{seed}:{family}:train"``, skipping any draft
    that shares a normal form or prompt with a task already taken, or whose reference passes
    a held-out task's tests (``behaviour.matching``, across families: merge sort and
    insertion sort under one key are one function)."""
    from koda.tasks.behaviour import load_function, matching, probe

    if train < 0 or heldout < 0 or train + heldout == 0:
        raise KodaError(f"per-family counts train={train}, heldout={heldout} must be >= 0 and not both 0")
    names = family_names(families)
    keys: set[str] = set()
    texts: set[str] = set()
    held: list[Task] = []
    for name in names:
        drafts = _distinct(KNOWN_FAMILIES[name], random.Random(f"{seed}:{name}:heldout"), heldout, keys, texts)
        held += [_task(d, KNOWN_FAMILIES[name], "heldout", i) for i, d in enumerate(drafts)]
    probes = [probe(t.program(), t.entry_point, t.test) for t in held]

    def new_behaviour(draft: Draft) -> bool:
        fn = load_function(draft.prompt() + draft.body, draft.name)
        return fn is not None and not matching(fn, probes, first=True)

    out: list[Task] = []
    for name in names:
        drafts = _distinct(KNOWN_FAMILIES[name], random.Random(f"{seed}:{name}:train"), train, keys, texts,
                           new_behaviour, up_to=train_up_to)
        out += [_task(d, KNOWN_FAMILIES[name], "train", i) for i, d in enumerate(drafts)]
    return out + held
