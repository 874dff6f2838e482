"""Jobs run on two real ranks by tests/rl (see tests.helpers.ranks.run_ranks)."""

from __future__ import annotations


def tracker_split(seed: int) -> dict:
    """Each rank feeds its own unequal shards of one data set; return the merged statistics."""
    import numpy as np
    import torch

    from koda.distributed import comm
    from koda.rl.tracker import RunningMoments

    data = np.random.default_rng(seed).normal(3.0, 2.0, size=(2, 3, 40))
    sizes = [(5, 17), (31, 2)]                      # per batch: rank 0 and rank 1 sample counts
    tracker = RunningMoments()
    for batch, (n0, n1) in enumerate(sizes):
        n = n0 if comm.rank() == 0 else n1
        tracker.update(torch.tensor(data[comm.rank(), batch, :n]))
    return {"count": float(tracker.count), "mean": float(tracker.mean), "var": float(tracker.var)}
