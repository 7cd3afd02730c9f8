"""Baselines that shorten an audio span inside the decoder, in the same framework as the weighted merge.

Shapes: B batch, n audio-span length, D hidden size, K key features (all KV heads concatenated),
m = num_remove tokens removed, so the span shrinks from n to n - m; T KV-cache length, H KV heads.

Every span reducer has one signature so a model adapter can swap them by name (SPAN_REDUCERS):

    reducer(x [B, n, D], keys [B, n, K] | None, received [B, n] | None, num_remove, *, generator=None)
        -> ReducedSpan(tokens [B, n - m, D], source_index [B, n - m] int64 ascending)

source_index holds the first member of each merged group, or the kept token for evictions. num_remove is the
same for the whole batch (the KV cache stays rectangular); each sample picks its own tokens. Reducers that
draw random numbers use only `generator` (the global RNG when it is None), so a seeded generator reproduces
a run. Sums and similarities are accumulated in fp32; tokens come back in x's dtype.

H2O is a decode-time KV-cache eviction rather than a span reducer: it lives in reduction/h2o.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastadasp.reduction.merge import (
    ReducedSpan,
    adjacent_key_similarity,
    chain_group_index,
    group_first_index,
    merge_by_groups,
    weighted_merge_span,
)

SpanReducer = Callable[..., ReducedSpan]


# --------------------------------------------------------------------------------------------------------
# shared helpers


def _check_span(
    x: torch.Tensor, keys: torch.Tensor | None, received: torch.Tensor | None, num_remove: int
) -> tuple[int, int]:
    """Validate a reducer's arguments; returns (B, n)."""
    if x.dim() != 3:
        raise ValueError(f"x must be [B, n, D], got shape {tuple(x.shape)}")
    batch, n, _ = x.shape
    if keys is not None and (keys.dim() != 3 or keys.shape[:2] != (batch, n)):
        raise ValueError(f"keys must be [B, n, K] matching x {tuple(x.shape)}, got {tuple(keys.shape)}")
    if received is not None and received.shape != (batch, n):
        raise ValueError(f"received must be [B, n] = {(batch, n)}, got {tuple(received.shape)}")
    if not 0 <= num_remove <= max(n - 1, 0):
        raise ValueError(f"num_remove must be in [0, n-1] = [0, {max(n - 1, 0)}], got {num_remove}")
    return batch, n


def _require_keys(keys: torch.Tensor | None, method: str) -> torch.Tensor:
    if keys is None:
        raise ValueError(f"{method} needs the span's keys [B, n, K], got None")
    return keys


def _identity(x: torch.Tensor) -> ReducedSpan:
    batch, n, _ = x.shape
    return ReducedSpan(x, torch.arange(n, device=x.device).expand(batch, n))


def _merge_picked_edges(x: torch.Tensor, picked: torch.Tensor, weights: torch.Tensor | None) -> ReducedSpan:
    """Merge the chains that picked edges [B, n-1] form, exactly like the weighted merge does."""
    num_groups = x.shape[1] - int(picked[0].sum())
    groups = chain_group_index(picked)
    return ReducedSpan(merge_by_groups(x, groups, weights, num_groups), group_first_index(groups, num_groups))


def _keep_tokens(x: torch.Tensor, keep: torch.Tensor) -> ReducedSpan:
    """Gather the kept tokens in their original order.

    keep: [B, n] bool with the same number of True per row -> tokens [B, n', D], source_index [B, n']
    """
    batch, n, dim = x.shape
    index = torch.arange(n, device=x.device).expand(batch, n)[keep].view(batch, -1)
    return ReducedSpan(x.gather(1, index.unsqueeze(-1).expand(-1, -1, dim)), index)


def mask_of_first(order: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """[B, length] bool that is True at order[:, :count] (order: [B, length] permutations)."""
    mask = torch.zeros(order.shape[0], length, dtype=torch.bool, device=order.device)
    return mask.scatter(1, order[:, :count], True)


def _random_order(
    batch: int, length: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniformly random permutation of range(length) per row: [B, length] int64."""
    # argsort of i.i.d. uniforms. fp64 because fp32 has only 2**24 values: with thousands of tokens a tie
    # (resolved by index, hence biased) would be likely in fp32 and is negligible in fp64.
    noise = torch.rand(batch, length, generator=generator, device=device, dtype=torch.float64)
    return torch.argsort(noise, dim=-1, stable=True)


# --------------------------------------------------------------------------------------------------------
# merges


def weighted_merge_reducer(
    x: torch.Tensor,
    keys: torch.Tensor,
    received: torch.Tensor | None,
    num_remove: int,
    *,
    generator: torch.Generator | None = None,
) -> ReducedSpan:
    """FastAdaSP: top-m key-similar adjacent edges, chained, weighted by attention received (merge.py).

    generator is unused (the merge is deterministic); it is accepted so every reducer has one signature.
    """
    _check_span(x, keys, received, num_remove)
    return weighted_merge_span(x, _require_keys(keys, "weighted merge"), received, num_remove)


def average_merge(
    x: torch.Tensor,
    keys: torch.Tensor,
    received: torch.Tensor | None,
    num_remove: int,
    *,
    generator: torch.Generator | None = None,
) -> ReducedSpan:
    """The weighted merge's edge selection and chaining with a plain average (ablates the weights).

    received and generator are unused.
    """
    _check_span(x, keys, received, num_remove)
    return weighted_merge_span(x, _require_keys(keys, "average merge"), None, num_remove)


def random_merge(
    x: torch.Tensor,
    keys: torch.Tensor | None,
    received: torch.Tensor | None,
    num_remove: int,
    *,
    generator: torch.Generator | None = None,
) -> ReducedSpan:
    """num_remove adjacent edges drawn uniformly without replacement per sample, chained, plain average.

    Isolates the value of choosing edges by key similarity. keys and received are unused.
    """
    batch, n = _check_span(x, keys, received, num_remove)
    if num_remove == 0:
        return _identity(x)
    picked = mask_of_first(_random_order(batch, n - 1, x.device, generator), num_remove, n - 1)
    return _merge_picked_edges(x, picked, None)


# --------------------------------------------------------------------------------------------------------
# A-ToMe: disjoint adjacent pairs


def _greedy_disjoint(score: torch.Tensor, valid: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Sequential greedy selection of non-adjacent items on a line, computed without a sequential loop.

    score: [B, E] (higher is better), valid: [B, E] bool, limit: [B] int64 -> picked [B, E] bool.
    Items e and e+1 conflict. The sequential rule is: visit valid items by descending score (ties: lower
    index first) and take an item when neither neighbour has been taken, stopping after limit[b] items.

    Closed form on a line: give each item its rank in the visiting order and call a neighbour "better" when
    it is visited earlier. Following better neighbours from e to the left climbs a run of a_left items to a
    local best, which greedy always takes; taken and skipped then alternate back down the run, so the left
    neighbour ends up taken iff a_left is odd. Same on the right, so e is taken iff a_left and a_right are
    both even. Run lengths are cummax/cummin scans, so the whole rule is O(E log E) tensor work.
    Stopping after limit items keeps the first limit takes in visiting order, i.e. the limit best-ranked.
    """
    batch, items = score.shape
    device = score.device
    if items == 0:
        return torch.zeros_like(valid)
    # Visiting order: valid items by descending score (stable = ties to lower index), invalid ones last.
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    invalid_in_order = (~valid).gather(1, order).to(torch.uint8)
    order = order.gather(1, torch.sort(invalid_in_order, dim=-1, stable=True).indices)
    position = torch.arange(items, device=device).expand(batch, items)
    rank = torch.empty_like(order).scatter_(1, order, position)

    left_better = torch.zeros(batch, items, dtype=torch.bool, device=device)
    left_better[:, 1:] = rank[:, :-1] < rank[:, 1:]
    right_better = torch.zeros(batch, items, dtype=torch.bool, device=device)
    right_better[:, :-1] = rank[:, 1:] < rank[:, :-1]
    # Nearest index at/left of e where the climb stops (left_better[0] is always False, so it exists).
    left_stop = torch.cummax(torch.where(left_better, 0, position), dim=-1).values
    # Nearest index at/right of e where the climb stops (right_better[-1] is always False).
    right_stop = torch.where(right_better, items - 1, position).flip(-1).cummin(dim=-1).values.flip(-1)
    a_left, a_right = position - left_stop, right_stop - position
    taken = valid & (a_left % 2 == 0) & (a_right % 2 == 0)

    taken_in_order = taken.gather(1, order)
    keep_in_order = taken_in_order & (taken_in_order.long().cumsum(dim=-1) <= limit.unsqueeze(-1))
    return torch.zeros_like(taken).scatter(1, order, keep_in_order)


def _augment_pairs(picked: torch.Tensor, similarity: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """One round of enlarging a set of disjoint pairs by shifting pairs between unpaired tokens.

    picked: [B, n-1] bool disjoint edges, similarity: [B, n-1], need: [B] int64 pairs still missing.
    Between two consecutive unpaired tokens u < v every token is paired, (u+1, u+2) ... (v-2, v-1); shifting
    them to (u, u+1) ... (v-1, v) adds one pair. A segment's gain is its new similarities minus its old ones;
    segments sharing an unpaired token conflict, so they are chosen with the same greedy as the pairs.
    Returns the new picked mask (at most need[b] more pairs per row, at least one where need > 0 and two
    unpaired tokens exist).
    """
    batch, edges = picked.shape
    paired = torch.zeros(batch, edges + 1, dtype=torch.bool, device=picked.device)
    paired[:, :-1] |= picked
    paired[:, 1:] |= picked
    unpaired = ~paired
    num_unpaired = unpaired.sum(dim=-1, keepdim=True)
    # Edge e lies in segment j when exactly j + 1 unpaired tokens sit at or before token e and another
    # unpaired token follows it (j <= U - 2).
    segment = unpaired[:, :-1].long().cumsum(dim=-1) - 1
    in_segment = (segment >= 0) & (segment <= num_unpaired - 2)
    segment = segment.clamp(0, max(edges - 1, 0))
    signed = similarity.double() * (1.0 - 2.0 * picked.double())  # + for edges the shift adds, - for removed
    gain = torch.zeros(batch, edges, dtype=torch.float64, device=picked.device)
    gain.scatter_add_(1, segment, torch.where(in_segment, signed, 0.0))
    segment_valid = torch.arange(edges, device=picked.device).unsqueeze(0) < num_unpaired - 1
    chosen = _greedy_disjoint(gain, segment_valid, need.clamp_min(0))
    return picked ^ (chosen.gather(1, segment) & in_segment)


def atome_select_pairs(similarity: torch.Tensor, num_pairs: int) -> torch.Tensor:
    """A-ToMe's pair selection: num_pairs disjoint adjacent edges per sample.

    similarity: [B, n-1] (edge i joins tokens i and i+1) -> picked [B, n-1] bool, exactly num_pairs per row.

    Rule (deterministic, documented so tests can check it):
      1. Greedy: visit edges by descending similarity (ties: lower index first); take an edge when neither of
         its tokens is already in a taken pair; stop after num_pairs. This is exactly the sequential greedy,
         computed in closed form by `_greedy_disjoint`.
      2. Greedy can run out of edges early (taking (1, 2) in 0-1-2-3 blocks both other pairs), although a
         path of n tokens holds floor(n/2) disjoint pairs. Then, while pairs are missing: between every two
         consecutive unpaired tokens u < v, shifting the pairs in between by one token adds a pair; segments
         are ranked by the similarity they add minus the similarity they remove and taken by the same greedy
         (segments sharing an unpaired token conflict), up to the number still missing. Each round adds at
         least one pair, and the number missing shrinks geometrically, so a few rounds suffice.
    Step 2 never runs when greedy alone reaches num_pairs, so the result then equals the sequential greedy.
    """
    batch, edges = similarity.shape
    if not 0 <= num_pairs <= (edges + 1) // 2:
        raise ValueError(
            f"A-ToMe can remove at most floor(n/2) = {(edges + 1) // 2} tokens at one layer "
            f"(n = {edges + 1}), got {num_pairs}"
        )
    target = torch.full((batch,), num_pairs, dtype=torch.long, device=similarity.device)
    valid = torch.ones_like(similarity, dtype=torch.bool)
    picked = _greedy_disjoint(similarity.float(), valid, target)
    # Every round adds >= 1 pair to every row still short, so edges + 1 rounds is a hard bound.
    for _ in range(edges + 1):
        need = target - picked.sum(dim=-1)
        if not bool((need > 0).any()):
            return picked
        picked = _augment_pairs(picked, similarity.float(), need)
    raise RuntimeError("A-ToMe pair selection did not converge (non-finite similarities?)")


def atome_merge(
    x: torch.Tensor,
    keys: torch.Tensor,
    received: torch.Tensor | None,
    num_remove: int,
    *,
    generator: torch.Generator | None = None,
) -> ReducedSpan:
    """A-ToMe (adjacent token merging): average num_remove disjoint pairs of key-similar adjacent tokens.

    Pairs never chain (a token belongs to at most one pair), so at most floor(n/2) tokens can go at one
    layer; asking for more raises ValueError. Pairs are chosen by `atome_select_pairs` (see its rule) from
    the same post-RoPE key cosine the weighted merge uses. received and generator are unused.
    """
    _, n = _check_span(x, keys, received, num_remove)
    keys = _require_keys(keys, "A-ToMe")
    if num_remove > n // 2:
        raise ValueError(
            f"A-ToMe can remove at most floor(n/2) = {n // 2} tokens at one layer (n = {n}), got {num_remove}"
        )
    if num_remove == 0:
        return _identity(x)
    picked = atome_select_pairs(adjacent_key_similarity(keys), num_remove)
    return _merge_picked_edges(x, picked, None)


# --------------------------------------------------------------------------------------------------------
# evictions


def random_evict(
    x: torch.Tensor,
    keys: torch.Tensor | None,
    received: torch.Tensor | None,
    num_remove: int,
    *,
    generator: torch.Generator | None = None,
) -> ReducedSpan:
    """Drop num_remove tokens chosen uniformly at random per sample; the rest keep their order.

    keys and received are unused.
    """
    batch, n = _check_span(x, keys, received, num_remove)
    if num_remove == 0:
        return _identity(x)
    dropped = mask_of_first(_random_order(batch, n, x.device, generator), num_remove, n)
    return _keep_tokens(x, ~dropped)


def fastv_evict(
    x: torch.Tensor,
    keys: torch.Tensor | None,
    received: torch.Tensor | None,
    num_remove: int,
    *,
    generator: torch.Generator | None = None,
) -> ReducedSpan:
    """FastV: keep the n - num_remove tokens that received the most attention (ties: lower index), in order.

    received: [B, n] attention received (required). keys and generator are unused.
    """
    batch, n = _check_span(x, keys, received, num_remove)
    if received is None:
        raise ValueError("FastV ranks tokens by the attention they received; received must not be None")
    if num_remove == 0:
        return _identity(x)
    order = torch.sort(received.float(), dim=-1, descending=True, stable=True).indices
    return _keep_tokens(x, mask_of_first(order, n - num_remove, n))


SPAN_REDUCERS: dict[str, SpanReducer] = {
    "weighted": weighted_merge_reducer,
    "average": average_merge,
    "random_merge": random_merge,
    "random_evict": random_evict,
    "atome": atome_merge,
    "fastv": fastv_evict,
}


__all__ = [
    "SPAN_REDUCERS",
    "atome_merge",
    "atome_select_pairs",
    "average_merge",
    "fastv_evict",
    "random_evict",
    "random_merge",
    "weighted_merge_reducer",
]
