import pytest
import torch

from fastadasp.runtime.kv_cache import CacheCapacityError, CompactedKVCache


def test_per_layer_lengths_and_in_place_append():
    cache = CompactedKVCache([10, 7, 4], batch_size=2, num_kv_heads=3, head_dim=5, max_new_tokens=2)
    for i, n in enumerate([10, 7, 4]):
        cache.write_prefill(i, torch.randn(2, 3, n, 5), torch.randn(2, 3, n, 5))
    assert cache.lengths == [10, 7, 4]
    buffer = cache.layers[1].key
    k_new = torch.randn(2, 3, 1, 5)
    k_all, _ = cache.append(1, k_new, k_new)
    assert cache.layers[1].key.data_ptr() == buffer.data_ptr()  # written in place, not reallocated
    assert k_all.shape[2] == 8 and torch.equal(k_all[:, :, 7:], k_new)
    assert cache.lengths == [10, 8, 4]
    cache.append(1, k_new, k_new)
    with pytest.raises(CacheCapacityError, match="max_new_tokens"):
        cache.append(1, k_new, k_new)


def test_reorder_and_expand_gather_rows_in_every_layer():
    cache = CompactedKVCache([3, 2], batch_size=2, num_kv_heads=1, head_dim=1, max_new_tokens=0)
    for i, n in enumerate([3, 2]):
        rows = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1).expand(2, 1, n, 1)
        cache.write_prefill(i, rows, rows)
    cache.reorder(cache.expansion_index(2))
    assert cache.view(1)[0][:, 0, 0, 0].tolist() == [1, 1, 2, 2]
    cache.reorder(torch.tensor([3, 0, 0, 2]))
    assert cache.view(0)[0][:, 0, 0, 0].tolist() == [2, 1, 1, 2]


def test_valid_bytes_count_only_valid_entries():
    cache = CompactedKVCache([8, 4], batch_size=1, num_kv_heads=2, head_dim=4, max_new_tokens=100)
    cache.write_prefill(0, torch.zeros(1, 2, 8, 4), torch.zeros(1, 2, 8, 4))
    cache.write_prefill(1, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    assert cache.valid_nbytes() == 2 * (8 + 4) * 2 * 4 * 4


def test_prefill_longer_than_capacity_is_refused():
    cache = CompactedKVCache([4], batch_size=1, num_kv_heads=1, head_dim=2, max_new_tokens=0)
    with pytest.raises(CacheCapacityError, match="capacity"):
        cache.write_prefill(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
