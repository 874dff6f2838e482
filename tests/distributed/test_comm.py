"""Merging running moments across ranks, checked in one process against numpy."""

import threading

import numpy as np
import pytest
import torch

from koda.distributed import comm

# unequal sizes and far-apart means: the spread between the parts is most of the variance
_SIZES, _LOCS = (5, 17, 40), (-3.0, 0.5, 10.0)


def _chunks(shape=()) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.normal(loc, 2.0, size=(n, *shape)) for n, loc in zip(_SIZES, _LOCS, strict=True)]


def _moments(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [N, *S] -> (count [], mean [*S], M2 [*S]), what each rank holds."""
    mean = x.mean(0)
    return torch.tensor(float(len(x))), torch.tensor(mean), torch.tensor(((x - mean) ** 2).sum(0))


@pytest.mark.parametrize("shape", [(), (3,)])
def test_merged_moments_of_parts_equal_numpy_over_their_concatenation(shape):
    chunks = _chunks(shape)
    parts = [_moments(x) for x in chunks]
    n, mean, m2 = comm.merge_moments(*(torch.stack(t) for t in zip(*parts, strict=True)))
    whole = np.concatenate(chunks)
    assert float(n) == len(whole) and mean.shape == m2.shape == shape
    np.testing.assert_allclose(mean.numpy(), whole.mean(0), rtol=1e-12)
    np.testing.assert_allclose((m2 / n).numpy(), whole.var(0), rtol=1e-10)


def test_all_reduce_moments_merges_what_each_rank_holds(monkeypatch):
    """The collective path, three ranks as threads: each passes only its own part, and the
    all-reduce is a sum over the threads."""
    chunks = _chunks()
    ranks = len(chunks)
    barrier, slots, who = threading.Barrier(ranks), [None] * ranks, threading.local()

    def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
        slots[who.rank] = values.double().clone()
        barrier.wait()
        out = sum(slots)
        barrier.wait()                  # nobody overwrites a slot before everyone has summed
        return out

    monkeypatch.setattr(comm, "all_reduce_sum", all_reduce_sum)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    results = [None] * ranks

    def rank(r: int) -> None:
        who.rank = r
        results[r] = comm.all_reduce_moments(*_moments(chunks[r]))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    whole = np.concatenate(chunks)
    for n, mean, m2 in results:
        assert n.shape == mean.shape == m2.shape == ()
        assert float(n) == len(whole)
        assert float(mean) == pytest.approx(whole.mean(), rel=1e-12)
        assert float(m2 / n) == pytest.approx(whole.var(), rel=1e-10)
