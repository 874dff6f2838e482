"""``koda eval``: sample a model on a task set, judge every sample, report pass@k and more.

    pass_at_k(n, c, k)                      # the unbiased estimator (Chen et al. 2021)
    score(tasks, samples, ks)               # samples -> one judged report (koda.judge)
    sample_model(loaded, tasks, n, ...)     # completions from a standalone model / checkpoint

See docs/eval.md.
"""

from koda.evaluate.passk import pass_at_k
from koda.evaluate.score import score

__all__ = ["pass_at_k", "score"]
