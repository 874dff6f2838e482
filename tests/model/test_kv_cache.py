import torch

from koda.model.kv_cache import KVCache


def _cache():
    cache = KVCache(n_layers=2, batch=4, n_kv_heads=1, head_dim=2, capacity=6, dtype=torch.float32)
    for layer in range(2):
        cache.append(layer, torch.arange(4.0)[:, None, None, None].expand(4, 1, 5, 2) * 10 + layer,
                     torch.zeros(4, 1, 5, 2))
    cache.advance(5)
    return cache


def test_keep_alternative_moves_the_chosen_position_and_drops_the_rest():
    cache = _cache()                                             # positions 2, 3, 4 are alternatives
    cache.keep_alternative(2, torch.tensor([0, 2, 1, 2]))
    assert cache.length == 3
    assert cache.keys[0][:, 0, :3, 0].tolist() == [[0.0] * 3, [10.0] * 3, [20.0] * 3, [30.0] * 3]
    cache.keys[1][:, 0, 2:5, 1] = torch.arange(12.0).view(4, 3)  # make the alternatives distinct
    cache.length = 5
    cache.keep_alternative(2, torch.tensor([0, 2, 1, 2]))
    assert cache.keys[1][:, 0, 2, 1].tolist() == [0.0, 5.0, 7.0, 11.0]


def test_full_reorder_changes_the_batch():
    cache = _cache()
    cache.reorder(torch.tensor([3, 3, 3, 1, 0]))
    assert cache.keys[1].shape[0] == 5 and cache.keys[1][:, 0, 0, 0].tolist() == [31.0, 31.0, 31.0, 11.0, 1.0]
