"""Reward components for a generated program, from the one judge and the AST analyses.

Each component is a number with a fixed meaning and range, logged unweighted as
``rl/reward/<name>``; the total is their weighted sum:

- ``tests`` [0, 1]: fraction of the task's hidden tests passed (``koda.judge`` verdict).
- ``complexity`` {0, 1}: the program passes every test and its growth is no worse than the
  task's target: the derived Θ-bound when the measurement agrees with it, otherwise the
  empirically fitted class (an undecided derivation falls back to the measurement).
  A wrong program earns none, so an O(1) program that returns garbage cannot collect it.
- ``syntax`` {-1, 0}: -1 when the program does not parse (the weight scales the penalty).
- ``similarity`` [0, 1]: normalised Levenshtein similarity to the reference (AST view).
- ``spectral`` [0, 1]: 1 - W1 / 2 between the normalised-Laplacian spectra of the generated and
  reference ASTs (eigenvalues lie in [0, 2], so W1 does too; 1 means identical spectra).
- ``poincare`` (0, 1]: exp(-d / tau), d the Chamfer distance between the Poincaré-disk
  embeddings of the two ASTs (``koda.analysis.hyperbolic``), measured in tree-edge lengths tau.

The structural terms compare the task's entry-point function when both programs define it
(the shared prompt would otherwise inflate them), else the whole modules.

Not gameable by construction: verdicts come only from ``koda.judge`` (the sandbox compares
values it decoded itself and never reads the program's stdout, so printed "PASSED" lines earn
nothing); a sample whose run did not reach a verdict on every test (a hang, memory
exhaustion, a crash, an exit or an escaping exception: sandbox status ``timeout``,
``memory``, ``crash`` or ``error``) gets the fixed ``failure`` reward as its total, however
similar to the reference it looks. So does a completion that writes no code (the entry point
holds only the prompt's docstring, ``pass`` or ``...``): an empty completion parses, so without
this rule it would escape the syntax penalty that a real attempt risks, and an RL run on the
smoke model learned exactly that within 25 steps (docs/rl.md). A bare ``raise`` or
``raise NotImplementedError`` is no code either (its tests fail as "error", which is the
failure reward anyway, but the status says why). The structural terms compare
function bodies without the shared docstring for the same reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from koda.config.rl import COMPONENTS as COMPONENTS  # re-exported: the reward names live with their weights
from koda.config.rl import RewardWeights as RewardWeights
from koda.errors import KodaError

# every sandbox run status but "ok" and "syntax_error" (koda.sandbox.results.PROGRAM_STATUSES;
# a test that exits early or dies by a signal is "error" or "crash"): the run reached no
# verdict on some test, so the sample earns the failure reward whatever else it scores
FAILURE_STATUSES = ("timeout", "memory", "crash", "error")
NO_CODE = "no_code"          # the completion added nothing to the entry point: failure reward too


@dataclass(frozen=True)
class RewardSample:
    """program: the whole generated program (prompt + completion); reference: the whole
    reference program; tests: a KODA tests file; target: the task's Θ-bound or None."""

    program: str
    reference: str
    tests: str
    entry_point: str | None = None
    target: dict | None = None


@dataclass(frozen=True)
class Reward:
    total: float
    components: dict[str, float]     # unweighted, one per COMPONENTS name
    failed: bool                     # hang / crash: total is the failure reward
    status: str                      # the sandbox's run status, "syntax_error" or "no_code"

    def log_items(self) -> dict[str, float]:
        return {f"rl/reward/{k}": v for k, v in self.components.items()} | {
            "rl/reward/total": self.total, "rl/reward/failed": float(self.failed)}


def _function_tree(source: str, name: str | None):
    """The entry point's FunctionDef without its docstring if the program defines it, else
    the module; None: no parse. The docstring is the prompt's, shared by every sample and the
    reference: left in, it would make an empty body look similar to the solution."""
    import ast
    import copy

    from koda.analysis.parse import parse_source

    parsed = parse_source(source)
    if not parsed.ok:
        return None
    for node in parsed.tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            node = copy.copy(node)
            node.body = _without_docstring(node.body) or [ast.Pass()]
            return node
    return parsed.tree


def _without_docstring(body: list) -> list:
    import ast

    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _placeholder(stmt) -> bool:
    """``pass``, a bare constant (``...``, another docstring), a bare ``raise`` or
    ``raise NotImplementedError[(...)]``: a statement that computes nothing."""
    import ast

    if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
        return True
    if isinstance(stmt, ast.Raise) and stmt.cause is None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return exc is None or (isinstance(exc, ast.Name) and exc.id == "NotImplementedError")
    return False


def writes_code(program: str, entry_point: str | None) -> bool:
    """False when the program defines the entry point with nothing in it but the prompt's
    docstring and placeholders (``pass``, ``...``, more strings, a bare ``raise``): the
    completion wrote no code. (A program that does not parse, or does not define the entry
    point, is judged by the tests and syntax terms.)"""
    import ast

    from koda.analysis.parse import parse_source

    parsed = parse_source(program)
    if not parsed.ok:
        return True
    for node in parsed.tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return not all(_placeholder(stmt) for stmt in _without_docstring(node.body))
    return True


def structure_components(program: str, reference: str, entry_point: str | None) -> dict[str, float]:
    """similarity, spectral, poincare of ``program`` against ``reference`` (0 where it does not parse)."""
    import ast

    from scipy.stats import wasserstein_distance

    from koda.analysis import hyperbolic, spectra
    from koda.analysis.graphs import ast_graph
    from koda.analysis.similarity import levenshtein_similarity

    gen, ref = _function_tree(program, entry_point), _function_tree(reference, entry_point)
    if gen is None or ref is None:
        return {"similarity": 0.0, "spectral": 0.0, "poincare": 0.0}
    out = {"similarity": levenshtein_similarity(ast.unparse(gen), ast.unparse(ref), view="text")}
    ga, gb = ast_graph(gen), ast_graph(ref)
    try:
        la, lb = spectra.spectrum(ga, normalized=True), spectra.spectrum(gb, normalized=True)
        out["spectral"] = 1.0 - float(wasserstein_distance(la.numpy(), lb.numpy())) / 2.0
    except KodaError:            # a graph too large for a dense eigensolve
        out["spectral"] = 0.0
    tau = min(hyperbolic.embed_tree(ga).tau, hyperbolic.embed_tree(gb).tau)   # one edge length for both
    d = hyperbolic.program_distance(hyperbolic.embed_tree(ga, tau=tau), hyperbolic.embed_tree(gb, tau=tau))
    out["poincare"] = math.exp(-d / tau)
    return out


def _fit_meets(fit: dict, target: dict) -> bool:
    """A measured growth class against the target, with the fit's own tolerances."""
    from koda.analysis.fit import BASE_TOL, EXP_TOL

    if fit.get("kind") == "exponential":
        return target["kind"] == "exponential" and fit["base"] <= target["base"] * (1 + BASE_TOL)
    if fit.get("kind") != "polylog":
        return False
    if target["kind"] == "exponential":
        return True
    e, t = fit["n_exponent"], target["n_exponent"]
    return e < t - EXP_TOL or (abs(e - t) <= EXP_TOL and fit["log_exponent"] <= target["log_exponent"])


def complexity_component(verdict, target: dict | None) -> float:
    """1.0 when a correct program's verified (else measured) growth is within the target."""
    from koda.evaluate.score import meets

    cx = verdict.complexity
    if target is None or not verdict.passed or not cx or cx.get("error"):
        return 0.0
    if cx.get("bound") is not None and cx.get("agree"):
        return float(meets(cx["bound"], target))
    fit = cx.get("empirical") or {}
    return float(_fit_meets(fit, target))


def reward_from_verdict(sample: RewardSample, verdict, weights: RewardWeights) -> Reward:
    """Combine a judge verdict for ``sample`` with the structural terms into a Reward."""
    tests = verdict.tests
    status = "syntax_error" if not verdict.syntax_ok else (tests.status if tests is not None else "ok")
    components = {
        "tests": tests.passed / tests.total if tests is not None and tests.total and verdict.syntax_ok else 0.0,
        "complexity": complexity_component(verdict, sample.target),
        "syntax": 0.0 if verdict.syntax_ok else -1.0,
    } | structure_components(sample.program, sample.reference, sample.entry_point)
    if verdict.syntax_ok and not writes_code(sample.program, sample.entry_point):
        status = NO_CODE
    failed = status in FAILURE_STATUSES or status == NO_CODE
    total = weights.failure if failed else weights.total(components)
    return Reward(total, components, failed, status)


def score(samples: list[RewardSample], weights: RewardWeights, *, pool=None, policy=None,
          measure: bool = True, budget_s: float = 2.0) -> list[Reward]:
    """Judge every sample (``koda.judge.judge``) and return its Reward, in order.

    Tests first; the verifier (seconds per program) then runs only where its verdict can
    count: a program that passes every test, of a task with a target, when the complexity
    weight is not zero. A wrong program earns no complexity reward whatever its growth.
    """
    import dataclasses

    from koda.judge import Submission, judge

    verdicts = judge([Submission(s.program, s.tests, s.entry_point, complexity=False) for s in samples],
                     pool=pool, policy=policy, measure=measure, budget_s=budget_s)
    asked = [i for i, (s, v) in enumerate(zip(samples, verdicts, strict=True))
             if weights.complexity > 0 and s.target is not None and v.passed]
    if asked:
        checked = judge([Submission(samples[i].program, None, samples[i].entry_point) for i in asked],
                        pool=pool, policy=policy, measure=measure, budget_s=budget_s)
        for i, v in zip(asked, checked, strict=True):
            verdicts[i] = dataclasses.replace(verdicts[i], complexity=v.complexity)
    return [reward_from_verdict(s, v, weights) for s, v in zip(samples, verdicts, strict=True)]
