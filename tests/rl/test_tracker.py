import numpy as np
import pytest
import torch

from koda.errors import KodaError
from koda.rl.tracker import RunningMoments, batch_moments, chan_merge
from tests.helpers.ranks import run_ranks


def test_chan_merge_of_parts_equals_numpy_over_the_whole():
    rng = np.random.default_rng(0)
    data = rng.normal(1e4, 3.0, size=(1000, 3))     # large offset: the sum-of-squares form would lose digits
    cuts = [0, 1, 7, 300, 301, 999, 1000]
    acc = batch_moments(torch.tensor(data[:0]))
    for a, b in zip(cuts, cuts[1:], strict=False):
        acc = chan_merge(acc, batch_moments(torch.tensor(data[a:b])))
    n, mean, m2 = acc
    assert float(n) == 1000
    np.testing.assert_allclose(mean.numpy(), data.mean(0), rtol=1e-13)
    np.testing.assert_allclose((m2 / n).numpy(), data.var(0), rtol=1e-9)


def test_running_moments_masked_updates_and_normalize():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 5.0, size=(3, 4, 6))
    mask = rng.random((3, 4, 6)) > 0.3
    tracker = RunningMoments()
    for i in range(3):
        tracker.update(torch.tensor(x[i]), torch.tensor(mask[i]))
    kept = x[mask]
    assert float(tracker.count) == kept.size
    np.testing.assert_allclose(float(tracker.mean), kept.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(tracker.var), kept.var(), rtol=1e-10)
    z = tracker.normalize(torch.tensor(kept))
    assert abs(float(z.mean())) < 1e-6 and float(z.std(unbiased=False)) == pytest.approx(1.0, rel=1e-6)


def test_state_dict_round_trip_and_bad_state():
    a = RunningMoments()
    a.update(torch.arange(10.0))
    b = RunningMoments()
    b.load_state_dict(a.state_dict())
    b.update(torch.arange(10.0, 20.0))
    np.testing.assert_allclose(float(b.mean), 9.5)
    np.testing.assert_allclose(float(b.var), np.arange(20.0).var())
    with pytest.raises(KodaError, match="lacks 'm2'"):
        b.load_state_dict({"count": torch.tensor(1.0), "mean": torch.tensor(0.0)})
    with pytest.raises(KodaError, match="shape"):
        RunningMoments((3,)).load_state_dict(a.state_dict())


@pytest.mark.slow
def test_two_ranks_agree_on_the_statistics_of_all_their_data(tmp_path):
    out = run_ranks("tests.rl.tracker_jobs:tracker_split", {"seed": 5}, tmp_path)
    data = np.random.default_rng(5).normal(3.0, 2.0, size=(2, 3, 40))
    whole = np.concatenate([data[0, 0, :5], data[1, 0, :17], data[0, 1, :31], data[1, 1, :2]])
    for rank in out:
        assert rank["count"] == whole.size
        assert rank["mean"] == pytest.approx(whole.mean(), rel=1e-12)
        assert rank["var"] == pytest.approx(whole.var(), rel=1e-10)
