"""A Hugging Face LLaMA/Qwen2-style decoder's parts, taken without copying, as the pieces the reference
prefill / decode step (runtime/reference.py) and the graph exporter compose: embeddings, per-layer q/k/v with
RoPE (and WavLLM's prompt LoRA), attention with or without its probabilities, output projection, MLP, logits.

Shapes: B batch, T sequence, D hidden, H query heads, Hkv KV heads, d head dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastadasp.core.shapes import DecoderArgs


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
