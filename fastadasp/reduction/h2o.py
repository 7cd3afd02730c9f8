"""H2O (heavy-hitter oracle) KV eviction during decode, a baseline in the same framework as the merges.

Every cache entry accumulates the attention it receives (summed over heads and query rows); once a layer
holds more than `budget` entries, it keeps the `recent_window` newest plus the heaviest hitters and drops
the rest. `h2o_keep_mask` / `h2o_compact` are the pure tensor steps; `H2OPolicy` plugs them into the
runtime's prefill / decode step through their `kv_policy` hook and works on any cache with the
`layers[i].length`, `view(i)` and `replace(i, k, v)` of runtime/kv_cache.py.

Shapes: B batch, H heads, T cache length, d head dim.
"""

from __future__ import annotations

import torch

from fastadasp.reduction.baselines import mask_of_first


def h2o_keep_mask(scores: torch.Tensor, valid_length: int, budget: int, recent_window: int) -> torch.Tensor:
    """Which KV-cache entries H2O keeps.

    scores: [B, T] attention each entry has accumulated; entries at index >= valid_length are padding.
    Returns [B, T] bool: if valid_length <= budget every valid entry; otherwise the recent_window newest
    valid entries plus the budget - recent_window highest-scoring older ones (ties: lower index), so every
    row keeps exactly min(valid_length, budget) entries. Padding is never kept.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, T], got shape {tuple(scores.shape)}")
    if budget < 1:
        raise ValueError(f"H2O budget must be >= 1, got {budget}")
    if not 0 <= recent_window <= budget:
        raise ValueError(f"H2O recent_window must be in [0, budget] = [0, {budget}], got {recent_window}")
    batch, length = scores.shape
    if not 0 <= valid_length <= length:
        raise ValueError(f"valid_length must be in [0, T] = [0, {length}], got {valid_length}")
    position = torch.arange(length, device=scores.device).expand(batch, length)
    if valid_length <= budget:
        return position < valid_length
    recent_start = valid_length - recent_window
    # Only entries older than the recent window compete as heavy hitters; the rest sort to the end.
    candidates = torch.where(position < recent_start, scores.float(), -torch.inf)
    order = torch.sort(candidates, dim=-1, descending=True, stable=True).indices
    heavy = mask_of_first(order, budget - recent_window, length)
    return heavy | ((position >= recent_start) & (position < valid_length))


def h2o_compact(
    k: torch.Tensor, v: torch.Tensor, scores: torch.Tensor, keep_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the kept cache entries to the front, in order.

    k: [B, H, T, d], v: [B, H, T, d_v], scores: [B, T], keep_mask: [B, T] bool with the same count T' per
    row (h2o_keep_mask guarantees it) -> k' [B, H, T', d], v' [B, H, T', d_v], scores' [B, T'].
    """
    batch, length = keep_mask.shape
    shapes_ok = k.dim() == 4 and v.dim() == 4 and k.shape[0] == batch and k.shape[2] == length
    if not shapes_ok or v.shape[:3] != k.shape[:3] or scores.shape != (batch, length):
        raise ValueError(
            f"h2o_compact needs k/v [B, H, T, *] and scores/keep_mask [B, T]; got k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}, scores {tuple(scores.shape)}, keep_mask {tuple(keep_mask.shape)}"
        )
    counts = keep_mask.sum(dim=-1)
    if batch and bool((counts != counts[0]).any()):
        raise ValueError(f"every sample must keep the same number of entries, got {counts.tolist()}")
    index = torch.arange(length, device=keep_mask.device).expand(batch, length)[keep_mask].view(batch, -1)

    def gather(t: torch.Tensor) -> torch.Tensor:
        return t.gather(2, index[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))

    return gather(k), gather(v), scores.gather(1, index)


class H2OPolicy:
    def __init__(self, budget: int, recent_window: int):
        if budget < 1 or not 0 <= recent_window <= budget:
            raise ValueError(f"H2O needs budget >= 1 and 0 <= recent_window <= budget, got {budget}, {recent_window}")
        self.budget = budget
        self.recent_window = recent_window
        self.scores: dict[int, torch.Tensor] = {}  # layer -> [B, L] accumulated attention

    def observe(self, layer_idx: int, probs: torch.Tensor, cache) -> None:
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
