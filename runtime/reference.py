"""The PyTorch reference prefill and one-token decode step with FastAdaSP reduction (gpt-fast's `prefill` /
`decode_one_token`); exported graphs and engines are checked against these.

Our own layer loop over the decoder's weights (no monkeypatching): each layer gets its own causal mask and
positions, merge layers compute attention explicitly (the merge weights are the attention each audio token
received), the others use fused SDPA. With every ratio 0 it is the Hugging Face model (tests hold it to 1e-5
logits and identical greedy/beam tokens).

Shapes: B batch, T sequence, D hidden, H query heads, Hkv KV heads, d head dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastadasp.core.choices import POSITION_POLICIES
from fastadasp.models.decoder import SpeechDecoder, attention_with_probs, causal_attention, full_attention
from fastadasp.reduction.baselines import SpanReducer, weighted_merge_reducer
from fastadasp.reduction.merge import attention_received, num_merged
from fastadasp.runtime.backends.base import PrefillResult
from fastadasp.runtime.kv_cache import CompactedKVCache


def prefill_lengths(num_text: int, span_lengths: list[int]) -> list[int]:
    """KV length of every layer: T_l = P + n_l + S."""
    return [num_text + n for n in span_lengths[:-1]]


def prefill(
    decoder: SpeechDecoder,
    embeds: torch.Tensor,
    audio_start: int,
    audio_length: int,
    ratios: Sequence[float],
    cache: CompactedKVCache,
    *,
    lora_scale: torch.Tensor | None = None,
    position_policy: str = "reference",
    reducer: SpanReducer = weighted_merge_reducer,
    generator: torch.Generator | None = None,
    keep_final_audio: bool = False,
    kv_policy=None,
) -> PrefillResult:
    """Run the prompt through the decoder, shortening the audio span at every layer with a ratio > 0.

    embeds: [B, T, D] = prefix (P) + audio (N = audio_length, starting at audio_start) + suffix (S).
    ratios: one per layer. Layer l's KV (written to `cache`) holds T_l = P + n_l + S tokens.
    position_policy: "reference" renumbers a shortened sequence right-aligned (the last T_l positions of the
    full prompt, as the FastAdaSP reference does); "first" gives a merged token its first member's position.
    Either way the first generated token sits at position T (the full prompt length).
    """
    if position_policy not in POSITION_POLICIES:
        raise ValueError(f"position_policy must be one of {POSITION_POLICIES}, got {position_policy!r}")
    if len(ratios) != decoder.args.num_layers:
        raise ValueError(f"need {decoder.args.num_layers} ratios (one per layer), got {len(ratios)}")
    bsz, total, _ = embeds.shape
    if not (0 <= audio_start and audio_start + audio_length <= total):
        raise ValueError(f"audio span [{audio_start}, {audio_start + audio_length}) is outside the {total}-token prompt")
    h = embeds
    positions = torch.arange(total, device=embeds.device).unsqueeze(0).expand(bsz, total)
    span = audio_length
    spans = [span]
    kept: dict[int, torch.Tensor] = {}
    for i in range(decoder.args.num_layers):
        layer = decoder.layers[i]
        cos, sin = decoder.rope(h, positions)
        q, k, v = decoder.qkv(i, layer.input_layernorm(h), cos, sin, lora_scale)
        cache.write_prefill(i, k, v)
        remove = num_merged(span, ratios[i])
        if remove > 0 or kv_policy is not None:
            attn, probs = attention_with_probs(q, k, v)
        else:
            attn, probs = causal_attention(q, k, v), None
        if kv_policy is not None:
            kv_policy.observe(i, probs, cache)
        h = h + decoder.out_proj(i, attn, lora_scale)
        if remove > 0:
            a, n = audio_start, span
            keys = k[:, :, a : a + n].transpose(1, 2).reshape(bsz, n, -1)
            reduced = reducer(h[:, a : a + n], keys, attention_received(probs, a, n), remove, generator=generator)
            h = torch.cat([h[:, :a], reduced.tokens, h[:, a + n :]], dim=1)
            span = n - remove
            kept[i] = reduced.source_index
            if position_policy == "first":
                audio_pos = positions[:, a : a + n].gather(1, reduced.source_index)
                positions = torch.cat([positions[:, :a], audio_pos, positions[:, a + n :]], dim=1)
            else:
                length = h.shape[1]
                positions = torch.arange(total - length, total, device=h.device).unsqueeze(0).expand(bsz, length)
        h = decoder.mlp(i, h)
        spans.append(span)
    final_audio = h[:, audio_start : audio_start + span] if keep_final_audio else None
    return PrefillResult(decoder.logits(h[:, -1]), spans, total, kept, final_audio)


def decode_one_token(
    decoder: SpeechDecoder,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cache: CompactedKVCache,
    *,
    lora_scale: torch.Tensor | None = None,
    kv_policy=None,
) -> torch.Tensor:
    """One decode step: input_ids [B, 1] at position_ids [B, 1] -> logits [B, V] (fp32).

    Every layer writes its new key/value in place at its own current length and attends to its valid prefix.
    kv_policy (e.g. H2O eviction) sees each layer's attention probabilities [B, H, 1, L] and may compact
    that layer's cache afterwards.
    """
    h = decoder.embed(input_ids)
    cos, sin = decoder.rope(h, position_ids)
    for i, layer in enumerate(decoder.layers):
        q, k, v = decoder.qkv(i, layer.input_layernorm(h), cos, sin, lora_scale)
        k_all, v_all = cache.append(i, k, v)
        if kv_policy is None:
            attn = full_attention(q, k_all, v_all)
        else:
            attn, probs = attention_with_probs(q, k_all, v_all)
            kv_policy.observe(i, probs, cache)
        h = h + decoder.out_proj(i, attn, lora_scale)
        h = decoder.mlp(i, h)
    return decoder.logits(h[:, -1])
