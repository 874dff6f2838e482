"""``verify``: everything the judge says about one function, as one JSON-ready dict.

Static and empirical results are computed independently and then compared: the bound
from the code's recurrence, and the class fitted to operation counts measured in the
sandbox. They must agree for ``agree`` to be true; an undecided bound never agrees.
"""

from __future__ import annotations

import ast

from koda.analysis import empirical, hodge, spectra
from koda.analysis.graphs import program_graph
from koda.analysis.methods import lift_methods
from koda.analysis.parse import parse_source, pick_function
from koda.analysis.recurrence import extract
from koda.analysis.solve import Bound, solve
from koda.analysis.symbolic import Undecided
from koda.errors import KodaError


def _shape(bound: Bound | None, ext) -> str:
    if bound is not None and bound.kind == "exponential":
        return "exponential"
    calls = ext.recurrence.calls if ext.recurrence else ()
    return "divide" if calls and all(c.divides for c in calls) else "geometric"


def _agreement(bound: Bound | None, m: empirical.Measurement | None) -> tuple[bool, str]:
    if bound is None:
        return False, "no derived bound to compare"
    if m is None:
        return False, "not measured"
    if m.fit is None:
        return False, f"no empirical fit: {m.error}"
    from koda.analysis.fit import consistent
    return consistent(m.points, bound.kind, bound.n_exponent, bound.log_exponent, bound.base, m.fit)


def verify_tree(tree: ast.Module, function: str | None = None, measure: bool = True,
                budget_s: float = 3.0, runner=None) -> dict:
    """Derive, measure and compare the complexity of ``function`` (default: first recursive).

    ``function`` may name a method as ``Class.method``; methods that use ``self`` only to
    call sibling methods are analysed as functions (``methods.lift_methods``).
    """
    tree, lifted = lift_methods(tree)
    by_method = {v: k for k, v in lifted.items()}
    func = pick_function(tree, by_method.get(function, function))
    if func is None:
        if function and "." in function:
            raise KodaError(f"no method {function!r} that uses self only to call other methods")
        what = f"no function {function!r}" if function else "no function"
        raise KodaError(f"{what} in the program")
    ext = extract(func, tree)
    bound, reason = None, ext.reason
    if ext.recurrence is not None:
        try:
            bound = solve(ext.recurrence)
        except Undecided as err:
            reason = str(err)
    graph = program_graph(func, tree)
    try:
        figures = {"betti": hodge.betti(graph), "laplacian_spectrum_summary": spectra.summary(graph)}
    except KodaError as err:  # a very large function: the figures are skipped, not the verdict
        figures = {"betti": None, "laplacian_spectrum_summary": None, "graph_error": str(err)}
    m = empirical.measure(tree, func, ext, _shape(bound, ext), budget_s, runner) if measure else None
    agree, why = _agreement(bound, m)
    rec = ext.recurrence
    return {
        "function": lifted.get(func.name, func.name),
        "size": rec.size if rec else None,
        "recurrence": rec.text() if rec else None,
        "assumptions": list(rec.assumptions) if rec else [],
        "bound": bound.as_dict() if bound else None,
        "bound_text": bound.text() if bound else None,
        "method": bound.method if bound else None,
        "undecided_reason": reason if bound is None else None,
        "empirical": m.as_dict() if m else None,
        "agree": agree,
        "agreement": why,
    } | figures


def verify_source(source: str, function: str | None = None, **kw) -> dict:
    """``verify_tree`` on source text; a program that does not parse gives ``syntax_error``."""
    parsed = parse_source(source)
    if not parsed.ok:
        return {"function": function, "syntax_error": parsed.error.as_dict(), "recurrence": None,
                "bound": None, "bound_text": None, "empirical": None, "agree": False,
                "betti": None, "laplacian_spectrum_summary": None}
    return verify_tree(parsed.tree, function, **kw)
