"""H2O (heavy-hitter oracle) KV eviction during decode, as a baseline in the same runtime.

Every cache entry accumulates the attention it receives (summed over heads and query rows); once a layer
holds more than `budget` entries, it keeps the `recent_window` newest plus the heaviest hitters and drops
the rest. The policy plugs into `prefill`/`decode_one_token` through their `kv_policy` hook.
"""

from __future__ import annotations

import torch

from fastadasp.reduction.baselines import h2o_compact, h2o_keep_mask
from fastadasp.runtime.kv_cache import CompactedKVCache


class H2OPolicy:
    def __init__(self, budget: int, recent_window: int):
        if budget < 1 or not 0 <= recent_window <= budget:
            raise ValueError(f"H2O needs budget >= 1 and 0 <= recent_window <= budget, got {budget}, {recent_window}")
        self.budget = budget
        self.recent_window = recent_window
        self.scores: dict[int, torch.Tensor] = {}  # layer -> [B, L] accumulated attention

    def observe(self, layer_idx: int, probs: torch.Tensor, cache: CompactedKVCache) -> None:
        """probs [B, H, Tq, L]: attention of this step's queries over the layer's valid cache entries."""
        received = probs.float().sum(dim=(1, 2))  # [B, L]
        previous = self.scores.get(layer_idx)
        if previous is not None:
            received[:, : previous.shape[1]] += previous
        length = cache.layers[layer_idx].length
        if length > self.budget:
            keep = h2o_keep_mask(received, length, self.budget, self.recent_window)
            k, v = cache.view(layer_idx)
            k, v, received = h2o_compact(k, v, received, keep)
            cache.replace(layer_idx, k, v)
        self.scores[layer_idx] = received

    def reorder(self, batch_index: torch.Tensor) -> None:
        for layer, s in self.scores.items():
            self.scores[layer] = s.index_select(0, batch_index)
