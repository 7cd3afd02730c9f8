"""The ONNX Runtime backend goes through the cache's API: past capacity it raises CacheCapacityError naming
the fix (not ONNX Runtime's raw ScatterElements index error), and the cache buffers stay in place."""

import pytest
import torch

from fastadasp.runtime.kv_cache import CacheCapacityError


def test_decode_past_capacity_raises_cache_capacity_error(tiny, export_graphs):
    lm = tiny("tiny-llama")
    ratios = [0.0, 0.5] + [0.0] * (lm.args.num_layers - 2)
    backend = export_graphs(lm, ratios)
    inputs = lm.synthetic_prompt(seed=3)
    result = backend.prefill(inputs, max_new_tokens=2)
    pointers = [layer.key.data_ptr() for layer in backend.cache.layers]
    token = result.logits.argmax(-1, keepdim=True)
    for step in range(2):
        backend.decode(token, torch.full((1, 1), inputs.total_length + step))
    assert [layer.key.data_ptr() for layer in backend.cache.layers] == pointers
    lengths = backend.cache.lengths
    with pytest.raises(CacheCapacityError, match=r"raise max_new_tokens \(--max-new-tokens\)"):
        backend.decode(token, torch.full((1, 1), inputs.total_length + 2))
    assert backend.cache.lengths == lengths  # refused before anything ran
