"""Static and measured analysis of generated programs (the judge's half that reads code).

- ``parse``: source -> ``ast`` tree, syntax errors and truncation as results.
- ``graphs``, ``spectra``, ``hodge``: AST / program graphs, Laplacian spectrum, Betti numbers.
- ``hyperbolic``, ``similarity``: Poincaré-disk AST embeddings and Levenshtein similarity.
- ``recurrence`` (with ``symbolic``, ``interp``, ``statements``, ``loops``, ``costmodel``,
  ``effects``, ``methods``): read T(n) off a recursive function.
- ``solve``, ``akra_bazzi``: turn T(n) into a Theta-bound, or refuse with a reason.
- ``instrument``, ``empirical``, ``fit``: count operations in the sandbox and fit the growth.
- ``report``: ``verify_source`` / ``verify_tree``, the dict behind ``koda verify --json``.

Submodules are imported where used, so ``koda exec`` does not pay for torch or scipy.
"""
