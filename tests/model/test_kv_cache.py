import torch

from koda.model.kv_cache import KVCache


def _cache():
    cache = KVCache(n_layers=2, batch=4, n_kv_heads=1, head_dim=2, capacity=6, dtype=torch.float32)
    for layer in range(2):
        cache.append(layer, torch.arange(4.0)[:, None, None, None].expand(4, 1, 5, 2) * 10 + layer,
                     torch.zeros(4, 1, 5, 2))
    cache.advance(5)
    return cache


def test_partial_reorder_copies_only_the_tail_in_place():
    cache = _cache()
    keys_before = cache.keys[0]
    cache.reorder(torch.tensor([2, 2, 0, 1]), start=3)
    assert cache.keys[0] is keys_before                          # in place
    assert cache.keys[0][:, 0, :3, 0].tolist() == [[0.0] * 3, [10.0] * 3, [20.0] * 3, [30.0] * 3]
    assert cache.keys[1][:, 0, 3:5, 0].tolist() == [[21.0] * 2, [21.0] * 2, [1.0] * 2, [11.0] * 2]
    assert cache.keys[0][:, 0, 5].abs().sum() == 0               # beyond `length` untouched


def test_full_reorder_changes_the_batch():
    cache = _cache()
    cache.reorder(torch.tensor([3, 3, 3, 1, 0]))
    assert cache.keys[1].shape[0] == 5 and cache.keys[1][:, 0, 0, 0].tolist() == [31.0, 31.0, 31.0, 11.0, 1.0]
