from collections import Counter

import numpy as np
import torch

from koda.data.loader import BatchLayout, TokenStream, TrainLoader, eval_batches
from koda.data.shards import open_split


def _stream(tiny_data):
    return TokenStream(open_split(tiny_data.shards_dir, "train"))


def _loader(tiny_data, rank, world=2, seed=3, micro=2, accum=2):
    return TrainLoader(_stream(tiny_data), BatchLayout(64, micro, accum, rank, world), seed)


def test_windows_cross_shard_boundaries(tmp_path):
    from koda.data.shards import Shard, write_shard

    for i in range(2):
        write_shard(tmp_path / f"train_0000{i}", np.arange(10) + 100 * i, np.array([10]), "t", 512)
    stream = TokenStream([Shard(p) for p in sorted(tmp_path.glob("*.idx"))])
    assert stream.window(7, 6).tolist() == [7, 8, 9, 100, 101, 102]


def test_same_seed_same_batches_and_shapes(tiny_data):
    a, b = _loader(tiny_data, 0), _loader(tiny_data, 0)
    for _ in range(3):
        xs, ys = a.next_batches(), b.next_batches()
        assert len(xs) == 2 and xs[0].shape == (2, 65)
        assert all(torch.equal(x, y) for x, y in zip(xs, ys, strict=True))
    assert not torch.equal(_loader(tiny_data, 0, seed=4).next_batches()[0], _loader(tiny_data, 0).next_batches()[0])


def _rows(batches) -> Counter:
    """The rows (token windows) of one step's micro-batches, as a multiset."""
    return Counter(tuple(row.tolist()) for batch in batches for row in batch)


def test_ranks_get_disjoint_halves_of_the_one_rank_global_batch(tiny_data):
    """What next_batches() returns: per step, the two ranks' rows together are exactly the
    rows one rank gets with the same global batch (2 ranks x 2 x 2 = 1 rank x 4 x 2), and no
    row is given to both ranks or repeated within the epoch."""
    ranks = [_loader(tiny_data, rank) for rank in range(2)]
    whole = TrainLoader(_stream(tiny_data), BatchLayout(64, 4, 2, 0, 1), seed=3)
    stream, seen = _stream(tiny_data), Counter()
    for _ in range(4):
        parts = [_rows(loader.next_batches()) for loader in ranks]
        assert sum(parts[0].values()) == sum(parts[1].values()) == 4
        assert not parts[0] & parts[1]
        assert parts[0] + parts[1] == _rows(whole.next_batches())
        seen += parts[0] + parts[1]
    assert max(seen.values()) == 1 and len(seen) == 4 * 8
    # every row is a window of the stream at a multiple of seq_len
    starts = {tuple(stream.window(64 * w, 65).tolist()) for w in range((len(stream) - 1) // 64)}
    assert set(seen) <= starts


def test_resume_continues_the_exact_sequence(tiny_data):
    straight = _loader(tiny_data, 1)
    for _ in range(5):
        straight.next_batches()
    expected = straight.next_batches()
    first = _loader(tiny_data, 1)
    for _ in range(5):
        first.next_batches()
    resumed = _loader(tiny_data, 1)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(resumed.next_batches(), expected, strict=True))


def test_epoch_rolls_over_with_a_new_permutation(tiny_data):
    loader = _loader(tiny_data, 0)
    loader.step = loader.steps_per_epoch - 1
    first_perm = loader._permutation().copy()
    loader.next_batches()
    assert loader.epoch == 1 and loader.step == 0
    assert not np.array_equal(first_perm, loader._permutation())


def test_eval_batches_are_fixed_and_rank_disjoint(tiny_data):
    stream = TokenStream(open_split(tiny_data.shards_dir, "val"))
    r0 = eval_batches(stream, BatchLayout(64, 2, 1, 0, 2), 2)
    r1 = eval_batches(stream, BatchLayout(64, 2, 1, 1, 2), 2)
    assert torch.equal(r0[0][0], torch.from_numpy(stream.window(0, 65)))
    assert torch.equal(r1[0][0], torch.from_numpy(stream.window(64, 65)))


def test_document_windows_start_at_the_end_of_text_before_each_document(tmp_path):
    from koda.data.loader import document_starts
    from koda.data.shards import Shard, write_shard

    # two shards; documents of 3, 2 | 4, 3 tokens, each ending in EOS (2)
    write_shard(tmp_path / "train_00000", np.array([5, 6, 2, 7, 2]), np.array([3, 5]), "t", 512)
    write_shard(tmp_path / "train_00001", np.array([8, 9, 10, 2, 11, 12, 2]), np.array([4, 7]), "t", 512)
    stream = TokenStream([Shard(p) for p in sorted(tmp_path.glob("*.idx"))])
    starts = document_starts(stream, seq_len=3)
    assert starts.tolist() == [2, 4, 8]          # the last document's window would run off the stream
    assert [stream.window(int(s), 4).tolist()[:2] for s in starts] == [[2, 7], [2, 8], [2, 11]]
    loader = TrainLoader(stream, BatchLayout(3, 1, 1, 0, 1), seed=0, starts=starts)
    rows = sorted(tuple(loader.next_batches()[0][0].tolist()) for _ in range(3))
    assert rows == [(2, 7, 2, 8), (2, 8, 9, 10), (2, 11, 12, 2)] and loader.epoch == 1
