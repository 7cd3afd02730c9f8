"""FastAdaSP weighted token merge as pure tensor functions (no model imports).

Shapes: B batch, n audio-span length, D hidden size, K key features (all KV heads concatenated),
m number of merged edges, so the span shrinks from n to n - m.

The merge at one decoder layer (the FastAdaSP weighted merge):
  1. s_i = cos(k_i, k_{i+1}) for adjacent audio tokens, keys post-RoPE with every KV head concatenated.
  2. w_j = attention that token j received, summed over heads and query rows.
  3. pick the m edges with the largest s_i (ties: lower index first).
  4. picked edges that touch form one chain; each chain becomes sum(w_j h_j) / sum(w_j).

Every function is vectorised (sort / cumsum / scatter); nothing loops over tokens. Similarities and the
weighted sums are accumulated in fp32 whatever the input dtype, so fp16/bf16 runs pick edges from the same
numbers an fp32 run would see up to input rounding; outputs come back in the input dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Cosine similarity denominator floor: keeps zero-norm keys from producing NaN (they get similarity 0).
_NORM_EPS = 1e-12

# Ratios are fixed-point numbers q / 2**16. Exported graphs, TensorRT shape expressions and the plugin all
# compute m = (n * q) // 2**16 in integer arithmetic, so every stage agrees on every length exactly; a
# float ratio would floor differently in fp32 (graph) and fp64 (Python) for some n.
RATIO_DENOMINATOR = 1 << 16


def ratio_numerator(ratio: float) -> int:
    """q with q / 2**16 >= ratio, the smallest such (exact multiples stay exact); q in [0, 2**16 - 1]."""
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    return min(max(math.ceil(ratio * RATIO_DENOMINATOR - 1e-6), 0), RATIO_DENOMINATOR - 1)


def quantize_ratio(ratio: float) -> float:
    """The ratio every stage actually uses: ratio_numerator(ratio) / 2**16 (exact in binary)."""
    return ratio_numerator(ratio) / RATIO_DENOMINATOR


def num_merged(span_length: int, ratio: float) -> int:
    """Edges merged at one layer: floor(n * r) with r = q / 2**16, never more than n - 1 (a span keeps at
    least one token). Every stage (planner, reference, exporter, runtime, plugin) uses this rule."""
    if span_length <= 1 or ratio <= 0.0:
        return 0
    return int(min(span_length * ratio_numerator(ratio) // RATIO_DENOMINATOR, span_length - 1))


def adjacent_key_similarity(keys: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of adjacent tokens' keys.

    keys: [B, n, K] (post-RoPE, all KV heads concatenated)  ->  [B, n-1] float32
    """
    k = keys.float()
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    return (k[:, :-1] * k[:, 1:]).sum(dim=-1)


def attention_received(attn_probs: torch.Tensor, span_start: int, span_length: int) -> torch.Tensor:
    """Attention each audio token received, summed over heads and every query row.

    attn_probs: [B, H, Q, T] softmax probabilities (causal, so rows before a token add zero)
    returns:    [B, n] float32 for keys span_start .. span_start + n - 1
    """
    return attn_probs[..., span_start : span_start + span_length].float().sum(dim=(1, 2))


def select_merge_edges(similarity: torch.Tensor, num_merge: int) -> torch.Tensor:
    """Boolean mask of the num_merge most similar edges per sample.

    similarity: [B, n-1] -> picked: [B, n-1] bool with exactly num_merge True per row.
    Ties are broken towards the lower edge index (a stable descending sort keeps index order among equals).
    """
    picked = torch.zeros_like(similarity, dtype=torch.bool)
    if num_merge <= 0:
        return picked
    order = torch.sort(similarity, dim=-1, descending=True, stable=True).indices[:, :num_merge]
    return picked.scatter(1, order, True)


def chain_group_index(picked: torch.Tensor) -> torch.Tensor:
    """Group id of every token when picked edges chain tokens together.

    picked: [B, n-1] bool (edge i joins tokens i and i+1) -> groups: [B, n] int64 in [0, n - m).
    g_j = j - (number of picked edges before token j), so a run of k picked edges shares one id.
    """
    batch, edges = picked.shape
    merged_before = torch.zeros(batch, edges + 1, dtype=torch.long, device=picked.device)
    merged_before[:, 1:] = picked.long().cumsum(dim=-1)
    return torch.arange(edges + 1, device=picked.device).unsqueeze(0) - merged_before


def group_first_index(groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Index of the first member of every group.

    groups: [B, n] non-decreasing group ids -> [B, num_groups] int64
    """
    batch, n = groups.shape
    # A token starts a group when its id differs from its left neighbour's.
    starts = torch.ones_like(groups, dtype=torch.bool)
    starts[:, 1:] = groups[:, 1:] != groups[:, :-1]
    token_index = torch.arange(n, device=groups.device).expand(batch, n)
    return token_index[starts].view(batch, num_groups)


def merge_by_groups(
    x: torch.Tensor, groups: torch.Tensor, weights: torch.Tensor | None, num_groups: int
) -> torch.Tensor:
    """Weighted average of the tokens in each group.

    x: [B, n, D], groups: [B, n] int64 ids in [0, num_groups), weights: [B, n] or None (plain average)
    returns [B, num_groups, D] in x's dtype; sums are accumulated in fp32.
    """
    batch, n, dim = x.shape
    w = torch.ones(batch, n, device=x.device) if weights is None else weights.float()
    numer = torch.zeros(batch, num_groups, dim, device=x.device, dtype=torch.float32)
    numer.scatter_add_(1, groups.unsqueeze(-1).expand(batch, n, dim), x.float() * w.unsqueeze(-1))
    denom = torch.zeros(batch, num_groups, device=x.device, dtype=torch.float32)
    denom.scatter_add_(1, groups, w)
    return (numer / denom.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)).to(x.dtype)


@dataclass(frozen=True)
class ReducedSpan:
    """Result of shortening an audio span.

    tokens:       [B, n', D] the new span
    source_index: [B, n'] index (into the old span) of each new token's first member / kept token,
                  ascending; used to carry positions (position_policy="first") and to report selections.
    """

    tokens: torch.Tensor
    source_index: torch.Tensor


def weighted_merge_span(
    x: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor | None, num_merge: int
) -> ReducedSpan:
    """The canonical FastAdaSP merge, also returning where each merged token came from.

    x: [B, n, D], keys: [B, n, K], weights: [B, n] or None, num_merge: m (same for the whole batch)
    """
    batch, n, _ = x.shape
    if keys.shape[:2] != (batch, n):
        raise ValueError(f"keys must be [B, n, K] matching x {tuple(x.shape)}, got {tuple(keys.shape)}")
    if weights is not None and weights.shape != (batch, n):
        raise ValueError(f"weights must be [B, n] = {(batch, n)}, got {tuple(weights.shape)}")
    if not 0 <= num_merge <= max(n - 1, 0):
        raise ValueError(f"num_merge must be in [0, n-1] = [0, {max(n - 1, 0)}], got {num_merge}")
    if num_merge == 0:
        index = torch.arange(n, device=x.device).expand(batch, n)
        return ReducedSpan(x, index)
    picked = select_merge_edges(adjacent_key_similarity(keys), num_merge)
    groups = chain_group_index(picked)
    num_groups = n - num_merge
    return ReducedSpan(merge_by_groups(x, groups, weights, num_groups), group_first_index(groups, num_groups))


def weighted_merge(
    x: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor | None, num_merge: int
) -> torch.Tensor:
    """FastAdaSP weighted merge of an audio span.

    x: [B, n, D] hidden states, keys: [B, n, K] post-RoPE keys (KV heads concatenated),
    weights: [B, n] attention received (None = plain average), num_merge: m
    returns [B, n - m, D]
    """
    return weighted_merge_span(x, keys, weights, num_merge).tokens
