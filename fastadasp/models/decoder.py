"""The reference decoder with FastAdaSP reduction: prefill with per-layer merges, then one-token decode.

This runs our own layer loop over a Hugging Face LLaMA/Qwen2-style decoder's weights (no monkeypatching):
each layer gets its own causal mask and positions, merge layers compute attention explicitly (the merge
weights are the attention each audio token received), the others use fused SDPA. With every ratio 0 it is
the Hugging Face model (tests hold it to 1e-5 logits and identical greedy/beam tokens).

Shapes: B batch, T sequence, D hidden, H query heads, Hkv KV heads, d head dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fastadasp.reduction.baselines import weighted_merge_reducer
from fastadasp.reduction.merge import ReducedSpan, attention_received, num_merged
from fastadasp.runtime.kv_cache import CompactedKVCache

POSITION_POLICIES = ("reference", "first")

# A span reducer: (x [B,n,D], keys [B,n,K], received [B,n] | None, num_remove) -> ReducedSpan.
SpanReducer = Callable[..., ReducedSpan]


@dataclass(frozen=True)
class DecoderArgs:
    """Dimensions of a LLaMA/Qwen2-style decoder (gpt-fast's ModelArgs)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int = 4096

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, cfg) -> "DecoderArgs":
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_hidden_layers,
            num_heads=cfg.num_attention_heads,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            head_dim=head_dim,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=getattr(cfg, "max_position_embeddings", 4096),
        )

    def flops_shape(self):
        from fastadasp.reduction.schedule import DecoderFlopsShape

        return DecoderFlopsShape(self.hidden_size, self.kv_dim, self.intermediate_size, self.num_layers)


LORA_PROJECTIONS = ("q", "k", "v", "o")


class PromptLoRA(nn.Module):
    """WavLLM's prompt-aware LoRA on q/k/v/o: output += (x @ A^T @ B^T) * s, with s [B, out] per request.

    lora_a[f"{i}_{p}"]: [rank, in], lora_b[f"{i}_{p}"]: [out, rank] for layer i, projection p.
    scale_index[p]: optional channel permutation applied to s before it multiplies projection p's output.
    The released scale network emits s in Meta's interleaved-RoPE channel order while q/k live in the
    Hugging Face half-split order after conversion, so q/k read s through the rotary permutation.
    """

    def __init__(self, num_layers: int, hidden_size: int, out_dims: dict[str, int], in_dims: dict[str, int], rank: int,
                 scale_index: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.rank = rank
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        for i in range(num_layers):
            for p in LORA_PROJECTIONS:
                self.lora_a[f"{i}_{p}"] = nn.Parameter(torch.zeros(rank, in_dims[p]))
                self.lora_b[f"{i}_{p}"] = nn.Parameter(torch.zeros(out_dims[p], rank))
        self.scale_index = {}
        for p, index in (scale_index or {}).items():
            self.register_buffer(f"scale_index_{p}", index.long(), persistent=False)
            self.scale_index[p] = f"scale_index_{p}"

    def scale_for(self, proj: str, scale: torch.Tensor) -> torch.Tensor:
        """scale [B, D] -> the per-channel scale of projection `proj`'s output [B, out]."""
        if proj in self.scale_index:
            return scale.index_select(1, getattr(self, self.scale_index[proj]))
        return scale

    def delta(self, layer_idx: int, proj: str, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x [B, T, in], scale [B, D] -> [B, T, out]"""
        key = f"{layer_idx}_{proj}"
        s = self.scale_for(proj, scale)
        return F.linear(F.linear(x, self.lora_a[key]), self.lora_b[key]) * s.unsqueeze(1).to(x.dtype)


class SpeechDecoder(nn.Module):
    """A decoder's parts, taken from a Hugging Face model without copying: embeddings, layers, final norm,
    rotary embedding and LM head; plus WavLLM's prompt LoRA when present."""

    def __init__(self, base: nn.Module, lm_head: nn.Module, lora: PromptLoRA | None = None):
        super().__init__()
        self.base = base  # has embed_tokens, layers, norm, rotary_emb (LlamaModel / Qwen2Model)
        self.lm_head = lm_head
        self.lora = lora
        self.args = DecoderArgs.from_hf_config(base.config)

    @property
    def layers(self) -> Sequence[nn.Module]:
        return self.base.layers

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.embed_tokens(input_ids)

    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] -> cos, sin [B, T, d] in x's dtype."""
        return self.base.rotary_emb(x, positions)

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """hidden_last [B, D] (before the final norm) -> logits [B, V] in fp32."""
        return self.lm_head(self.base.norm(hidden_last)).float()

    # --- per-layer pieces -------------------------------------------------------------------------
    def _proj(self, layer_idx: int, name: str, module: nn.Module, x: torch.Tensor, lora_scale) -> torch.Tensor:
        out = module(x)
        if self.lora is not None and lora_scale is not None:
            out = out + self.lora.delta(layer_idx, name, x, lora_scale)
        return out

    def qkv(self, layer_idx: int, h_norm: torch.Tensor, cos, sin, lora_scale=None):
        """h_norm [B, T, D] -> q [B, H, T, d], k, v [B, Hkv, T, d] with RoPE applied to q and k."""
        attn = self.layers[layer_idx].self_attn
        bsz, seq, _ = h_norm.shape
        d = self.args.head_dim
        q = self._proj(layer_idx, "q", attn.q_proj, h_norm, lora_scale).view(bsz, seq, -1, d).transpose(1, 2)
        k = self._proj(layer_idx, "k", attn.k_proj, h_norm, lora_scale).view(bsz, seq, -1, d).transpose(1, 2)
        v = self._proj(layer_idx, "v", attn.v_proj, h_norm, lora_scale).view(bsz, seq, -1, d).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def out_proj(self, layer_idx: int, attn_out: torch.Tensor, lora_scale=None) -> torch.Tensor:
        """attn_out [B, H, T, d] -> [B, T, D]"""
        bsz, _, seq, _ = attn_out.shape
        flat = attn_out.transpose(1, 2).reshape(bsz, seq, -1)
        return self._proj(layer_idx, "o", self.layers[layer_idx].self_attn.o_proj, flat, lora_scale)

    def mlp(self, layer_idx: int, h: torch.Tensor) -> torch.Tensor:
        """Residual MLP block: h + MLP(post_attention_layernorm(h))."""
        layer = self.layers[layer_idx]
        return h + layer.mlp(layer.post_attention_layernorm(h))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention_with_probs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention that also returns the probabilities (softmax in fp32, like HF eager).

    q [B, H, Tq, d], k/v [B, Hkv, Tk, d] (the queries are the last Tq tokens) -> out [B, H, Tq, d], probs [B, H, Tq, Tk]
    """
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    q_len, k_len = q.shape[2], k.shape[2]
    scores = torch.matmul(q, k.transpose(2, 3)) * (q.shape[-1] ** -0.5)
    # Query row t sits at key position k_len - q_len + t (queries are the newest tokens).
    causal = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(k_len - q_len + 1)
    scores = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v), probs


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fused causal attention (prefill, no past). q [B,H,T,d], k/v [B,Hkv,T,d] -> [B,H,T,d]"""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One new token attends to every valid cache entry. q [B,H,1,d], k/v [B,Hkv,L,d] -> [B,H,1,d]"""
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1])


@dataclass
class PrefillResult:
    """logits [B, V] at the last position; span_lengths per layer (+ after the last);
    kept: per merge layer, the source index [B, n'] of each surviving audio token (selection report)."""

    logits: torch.Tensor
    span_lengths: list[int]
    total_length: int
    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    final_audio_hidden: torch.Tensor | None = None  # [B, n_final, D] before the final norm


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


def hidden_states(decoder: SpeechDecoder, embeds: torch.Tensor, *, lora_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Full-length causal pass without a cache: embeds [B, T, D] -> last layer output [B, T, D] (before the
    final norm). WavLLM's prompt-scale pass runs this with no LoRA."""
    bsz, total, _ = embeds.shape
    positions = torch.arange(total, device=embeds.device).unsqueeze(0).expand(bsz, total)
    h = embeds
    cos, sin = decoder.rope(h, positions)
    for i, layer in enumerate(decoder.layers):
        q, k, v = decoder.qkv(i, layer.input_layernorm(h), cos, sin, lora_scale)
        h = decoder.mlp(i, h + decoder.out_proj(i, causal_attention(q, k, v), lora_scale))
    return h
