"""Prefill and decode ONNX graphs of a LLaMA/Qwen2-style decoder with the merge schedule fixed in the graph.

prefill: prefix_ids [B,P], audio_embeds [B,N,D], suffix_ids [B,S] (+ lora_scale [B,D] for WavLLM)
         -> logits [B,V] (last position, fp32), present.{i}.key/value [B,Hkv,T_i,d]
         with T_i = P + n_i + S and n_{i+1} = n_i - min(n_i * q_i // 65536, n_i - 1): every length follows
         from the input shapes alone (no data-dependent shapes), so one graph serves any N.
decode:  input_ids [B,1], position_ids [B,1], cache_lengths [L] (int64, valid entries per layer),
         past.{i}.key/value [B,Hkv,C_i,d] (each layer its own capacity C_i)
         -> logits [B,V], present.{i}.key/value [B,Hkv,C_i,d]: the past buffer with this step written at
         index cache_lengths[i]; bind present to the same memory as past and the write happens in place.

Attention is written as explicit MatMul/Softmax everywhere (ONNX opset 17 has no fused attention op;
TensorRT fuses the pattern itself). At merge layers its probabilities also feed the merge weights.
GQA is expressed by broadcasting queries [B,Hkv,G,T,d] against keys [B,Hkv,1,T,d], never by copying K/V.

Node names follow the module tree (GraphBuilder scopes), e.g. /layers.3/attn/q_proj/MatMul,
/layers.3/attn/q_proj/lora/MatMul, /layers.3/merge/WeightedMerge, /layers.0/attn/kv_cache/ScatterElements,
/lm_head/MatMul. Top-level scopes: TOP_SCOPES below; inside /layers.{i}: positions, rotary (prefill),
input_layernorm, attn/{q,k,v,o}_proj, attn/rotary, attn/mask, attn/present | attn/kv_cache, attn/residual,
merge (received, keys, positions), post_attention_layernorm, mlp/{gate,up,down}_proj, mlp/act, mlp/residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto

from fastadasp.core.dtypes import precision
from fastadasp.exporter.merge_op import MERGE_DOMAIN, MERGE_DOMAIN_VERSION, build_weighted_merge_function, weighted_merge_node
from fastadasp.exporter.onnx_builder import GraphBuilder, make_model
from fastadasp.reduction.merge import ratio_numerator

# Top-level scopes of every node name in the prefill and decode graphs.
TOP_SCOPES = ("constants", "embed", "positions", "rotary", "layers", "norm", "lm_head")
_MASK_VALUE = float(np.finfo(np.float32).min)


@dataclass(frozen=True)
class GraphSpec:
    ratios: tuple[float, ...]
    position_policy: str = "reference"
    dtype: str = "fp32"
    opset: int = 17
    max_audio_tokens: int = 3000  # sizes the merge's scan depth; inputs up to this length are exact
    debug_outputs: bool = False  # also output merge.{i}.source_index (tests compare selections)


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().astype(dtype)


class DecoderGraph:
    """Registers a SpeechDecoder's weights as initializers and emits its blocks into a GraphBuilder."""

    def __init__(self, b: GraphBuilder, decoder, spec: GraphSpec):
        self.b, self.decoder, self.spec = b, decoder, spec
        p = precision(spec.dtype)
        self.np_dtype, self.onnx_dtype = p.numpy, p.onnx_elem_type
        a = decoder.args
        self.args = a
        self.groups = a.num_heads // a.num_kv_heads
        base = decoder.base
        self.embed = b.initializer("embed_tokens", _np(base.embed_tokens.weight, self.np_dtype))
        self.lm_head_t = b.initializer("lm_head_t", _np(decoder.lm_head.weight.T, self.np_dtype))
        self.final_norm = (b.initializer("norm", _np(base.norm.weight, self.np_dtype)), base.norm.variance_epsilon)
        self.inv_freq = b.initializer("rope_inv_freq", base.rotary_emb.inv_freq.float().numpy())
        self.rope_scaling = float(base.rotary_emb.attention_scaling)
        act = getattr(base.config, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"exporter supports SwiGLU decoders (hidden_act 'silu'); this one uses {act!r}")

    # --- weights --------------------------------------------------------------------------------
    def _w(self, name: str, tensor: torch.Tensor | None, transpose=False):
        if tensor is None:
            return None
        return self.b.initializer(name, _np(tensor.T if transpose else tensor, self.np_dtype))

    def linear(self, x: str, name: str, module, layer_idx: int, proj: str | None, lora_scale: str | None) -> str:
        """x @ W^T (+ bias) (+ WavLLM's prompt LoRA) in scope `name`'s last part (q_proj, mlp.gate_proj -> gate_proj)."""
        with self.b.scope(name.rsplit(".", 1)[-1]):
            return self._linear(x, name, module, layer_idx, proj, lora_scale)

    def _linear(self, x: str, name: str, module, layer_idx: int, proj: str | None, lora_scale: str | None) -> str:
        b = self.b
        key = f"layers.{layer_idx}.{name}"
        w = self._w(f"{key}.weight_t", module.weight, transpose=True)
        y = b.op("MatMul", [x, w])
        if module.bias is not None:
            y = b.op("Add", [y, self._w(f"{key}.bias", module.bias)])
        lora = self.decoder.lora
        if lora is not None and lora_scale is not None and proj is not None:
            a = self._w(f"{key}.lora_a_t", lora.lora_a[f"{layer_idx}_{proj}"], transpose=True)
            bb = self._w(f"{key}.lora_b_t", lora.lora_b[f"{layer_idx}_{proj}"], transpose=True)
            scale = lora_scale
            if proj in lora.scale_index:
                index = getattr(lora, lora.scale_index[proj]).numpy().astype(np.int64)
                with b.scope("lora"):
                    scale = b.op("Gather", [lora_scale, b.const(index)], axis=1)
            with b.scope("lora"):
                delta = b.op("MatMul", [b.op("MatMul", [x, a]), bb])
                y = b.op("Add", [y, b.op("Mul", [delta, b.unsqueeze(scale, [1])])])
        return y

    def rms_norm(self, x: str, weight: str, eps: float) -> str:
        b = self.b
        xf = b.op("Cast", [x], to=TensorProto.FLOAT)
        if self.spec.opset >= 18:  # ReduceMean took its axes as an attribute until opset 18
            var = b.op("ReduceMean", [b.op("Mul", [xf, xf]), b.const([-1])], keepdims=1)
        else:
            var = b.op("ReduceMean", [b.op("Mul", [xf, xf])], axes=[-1], keepdims=1)
        normed = b.op("Div", [xf, b.op("Sqrt", [b.op("Add", [var, b.const(eps, np.float32)])])])
        return b.op("Mul", [weight, b.op("Cast", [normed], to=self.onnx_dtype)])

    def norm_weight(self, name: str, module) -> tuple[str, float]:
        return self._w(name, module.weight), module.variance_epsilon

    def layer_norm(self, i: int, name: str, h: str) -> str:
        """RMSNorm `name` (input_layernorm | post_attention_layernorm) of layer i, in its own scope."""
        with self.b.scope(name):
            return self.rms_norm(h, *self.norm_weight(f"layers.{i}.{name}", getattr(self.decoder.layers[i], name)))

    def rope(self, positions: str) -> tuple[str, str]:
        """positions [B|1, T] int64 -> cos, sin [B|1, 1, T, d] in the model dtype (scope "rotary")."""
        with self.b.scope("rotary"):
            return self._rope(positions)

    def _rope(self, positions: str) -> tuple[str, str]:
        b = self.b
        freqs = b.op("Mul", [b.unsqueeze(b.op("Cast", [positions], to=TensorProto.FLOAT), [-1]), self.inv_freq])
        emb = b.concat([freqs, freqs], -1)
        scale = b.const(self.rope_scaling, np.float32)
        cos = b.op("Cast", [b.op("Mul", [b.op("Cos", [emb]), scale])], to=self.onnx_dtype)
        sin = b.op("Cast", [b.op("Mul", [b.op("Sin", [emb]), scale])], to=self.onnx_dtype)
        return b.unsqueeze(cos, [1]), b.unsqueeze(sin, [1])

    def apply_rope(self, x: str, cos: str, sin: str) -> str:
        b, half = self.b, self.args.head_dim // 2
        with b.scope("rotary"):
            return self._apply_rope(x, cos, sin, half)

    def _apply_rope(self, x: str, cos: str, sin: str, half: int) -> str:
        b = self.b
        x1 = b.slice(x, b.const([0]), b.const([half]), axis=3)
        x2 = b.slice(x, b.const([half]), b.const([2 * half]), axis=3)
        rotated = b.concat([b.op("Neg", [x2]), x1], 3)
        return b.op("Add", [b.op("Mul", [x, cos]), b.op("Mul", [rotated, sin])])

    def reshape_dims(self, x: str, parts: list) -> str:
        """Reshape with a shape assembled from x's own dims (int pairs (start, end)) and fixed sizes (lists).

        Explicit dims instead of Reshape's 0 placeholder: TensorRT cannot rule out a zero there and warns
        that it resolves the shape at runtime."""
        b = self.b
        pieces = [b.op("Shape", [x], start=p[0], end=p[1]) if isinstance(p, tuple) else b.const(p) for p in parts]
        return b.reshape(x, b.concat(pieces, 0))

    def heads(self, x: str, num_heads: int) -> str:
        """[B, T, H*d] -> [B, H, T, d]"""
        split = self.reshape_dims(x, [(0, 2), [num_heads, self.args.head_dim]])
        return self.b.op("Transpose", [split], perm=[0, 2, 1, 3])

    def qkv(self, i: int, h: str, cos: str, sin: str, lora_scale: str | None):
        """Call inside scope layers.{i}: input_layernorm, then attn/{q,k,v}_proj and attn/rotary."""
        x = self.layer_norm(i, "input_layernorm", h)
        attn = self.decoder.layers[i].self_attn
        with self.b.scope("attn"):
            q = self.heads(self.linear(x, "q_proj", attn.q_proj, i, "q", lora_scale), self.args.num_heads)
            k = self.heads(self.linear(x, "k_proj", attn.k_proj, i, "k", lora_scale), self.args.num_kv_heads)
            v = self.heads(self.linear(x, "v_proj", attn.v_proj, i, "v", lora_scale), self.args.num_kv_heads)
            return self.apply_rope(q, cos, sin), self.apply_rope(k, cos, sin), v

    def attention(self, q: str, k: str, v: str, additive_mask: str) -> tuple[str, str]:
        """q [B,H,Tq,d], k/v [B,Hkv,Tk,d], mask [.., Tq, Tk] fp32 -> out [B,H,Tq,d], probs [B,Hkv,G,Tq,Tk] (fp32)."""
        b, a = self.b, self.args
        q5 = self.reshape_dims(q, [(0, 1), [a.num_kv_heads, self.groups], (2, 3), [a.head_dim]])
        k5 = b.unsqueeze(b.op("Transpose", [k], perm=[0, 1, 3, 2]), [2])
        scores = b.op("Mul", [b.op("MatMul", [q5, k5]), b.const(a.head_dim**-0.5, self.np_dtype)])
        probs = b.op("Softmax", [b.op("Add", [b.op("Cast", [scores], to=TensorProto.FLOAT), additive_mask])], axis=-1)
        out5 = b.op("MatMul", [b.op("Cast", [probs], to=self.onnx_dtype), b.unsqueeze(v, [2])])
        return self.reshape_dims(out5, [(0, 1), [a.num_heads], (3, 4), [a.head_dim]]), probs

    def column_sums(self, probs: str) -> str:
        """Attention every key received, summed over heads and queries: probs [B,Hkv,G,Tq,Tk] -> [B, Tk].

        A GEMV with a ones row: ORT's multi-axis ReduceSum over this tensor (plus slicing it first) cost
        more than the attention itself at 1.5k tokens; the MatMul streams it once."""
        b = self.b
        tk = b.dim(probs, 4)
        rows = b.op("Mul", [b.op("Mul", [b.dim(probs, 1), b.dim(probs, 2)]), b.dim(probs, 3)])
        flat = b.reshape(probs, b.concat([b.dim(probs, 0), rows, tk], 0))  # [B, R, Tk]
        ones = b.op("Expand", [b.const([[1.0]], np.float32), b.concat([b.const([1]), rows], 0)])  # [1, R]
        return b.squeeze(b.op("MatMul", [ones, flat]), [1])  # [B, 1, Tk] -> [B, Tk]

    def attention_residual(self, i: int, h: str, out: str, lora_scale: str | None) -> str:
        """h + o_proj(attention output); call inside scopes layers.{i}/attn."""
        b = self.b
        flat = self.reshape_dims(b.op("Transpose", [out], perm=[0, 2, 1, 3]), [(0, 2), [self.args.num_heads * self.args.head_dim]])
        projected = self.linear(flat, "o_proj", self.decoder.layers[i].self_attn.o_proj, i, "o", lora_scale)
        with b.scope("residual"):
            return b.op("Add", [h, projected])

    def mlp(self, i: int, h: str) -> str:
        """Residual MLP block of layer i (post_attention_layernorm, mlp/...); call inside scope layers.{i}."""
        b, layer = self.b, self.decoder.layers[i]
        x = self.layer_norm(i, "post_attention_layernorm", h)
        with b.scope("mlp"):
            gate = self.linear(x, "mlp.gate_proj", layer.mlp.gate_proj, i, None, None)
            up = self.linear(x, "mlp.up_proj", layer.mlp.up_proj, i, None, None)
            with b.scope("act"):
                act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
            down = self.linear(act, "mlp.down_proj", layer.mlp.down_proj, i, None, None)
            with b.scope("residual"):
                return b.op("Add", [h, down])

    def logits(self, h: str) -> str:
        """h [B, T, D] -> logits of the last position [B, V] (fp32), written to the graph output "logits"."""
        b = self.b
        with b.scope("norm"):
            last = b.op("Gather", [h, b.const(-1)], axis=1)  # [B, D]
            x = self.rms_norm(last, *self.final_norm)
        with b.scope("lm_head"):
            logits = b.op("Cast", [b.op("MatMul", [x, self.lm_head_t])], to=TensorProto.FLOAT)
            b.op("Identity", [logits], outputs=["logits"])
        b.output("logits", TensorProto.FLOAT, ["batch", self.args.vocab_size])
        return "logits"

    def kv_output_shape(self, length_dim: str) -> list:
        return ["batch", self.args.num_kv_heads, length_dim, self.args.head_dim]


def build_prefill(decoder, spec: GraphSpec) -> onnx.ModelProto:
    if len(spec.ratios) != decoder.args.num_layers:
        raise ValueError(f"need one ratio per layer ({decoder.args.num_layers}), got {len(spec.ratios)}")
    if spec.position_policy not in ("reference", "first"):
        raise ValueError(f"position_policy must be 'reference' or 'first', got {spec.position_policy!r}")
    b = GraphBuilder()
    g = DecoderGraph(b, decoder, spec)
    a = decoder.args
    prefix = b.input("prefix_ids", TensorProto.INT64, ["batch", "prefix_len"])
    audio = b.input("audio_embeds", g.onnx_dtype, ["batch", "audio_len", a.hidden_size])
    suffix = b.input("suffix_ids", TensorProto.INT64, ["batch", "suffix_len"])
    lora_scale = b.input("lora_scale", g.onnx_dtype, ["batch", a.hidden_size]) if decoder.lora is not None else None

    with b.scope("embed"):
        h = b.concat([b.op("Gather", [g.embed, prefix]), audio, b.op("Gather", [g.embed, suffix])], 1)
    with b.scope("positions"):
        P = b.dim(prefix, 1)
        total = b.dim(h, 1)  # T0: positions continue from here whatever the merges do
        total_scalar = b.squeeze(total, [0])
        n = b.dim(audio, 1)
        first_positions = None
        if spec.position_policy == "first":
            first_positions = b.unsqueeze(b.op("Range", [b.const(0), total_scalar, b.const(1)]), [0])  # [1, T0]

    for i in range(a.num_layers):
        with b.scope(f"layers.{i}"):
            with b.scope("positions"):
                length = b.squeeze(b.dim(h, 1), [0])
                if first_positions is None:  # right-aligned: the last T_i positions of the full prompt
                    positions = b.unsqueeze(b.op("Range", [b.op("Sub", [total_scalar, length]), total_scalar, b.const(1)]), [0])
                else:
                    positions = first_positions
            cos, sin = g.rope(positions)
            q, k, v = g.qkv(i, h, cos, sin, lora_scale)
            with b.scope("attn"):
                with b.scope("present"):
                    b.op("Identity", [k], outputs=[f"present.{i}.key"])
                    b.op("Identity", [v], outputs=[f"present.{i}.value"])
                b.output(f"present.{i}.key", g.onnx_dtype, g.kv_output_shape(f"kv_len_{i}"))
                b.output(f"present.{i}.value", g.onnx_dtype, g.kv_output_shape(f"kv_len_{i}"))
                with b.scope("mask"):
                    steps = b.op("Range", [b.const(0), length, b.const(1)])
                    future = b.op("Greater", [b.unsqueeze(steps, [0]), b.unsqueeze(steps, [1])])  # [T, T] key after query
                    mask = b.op("Where", [future, b.const(_MASK_VALUE, np.float32), b.const(0.0, np.float32)])
                out, probs = g.attention(q, k, v, mask)
                h = g.attention_residual(i, h, out, lora_scale)
            q_num = ratio_numerator(spec.ratios[i])
            if q_num > 0:
                with b.scope("merge"):
                    h, n, first_positions = _merge(g, i, h, k, probs, P, n, q_num, first_positions)
            h = g.mlp(i, h)
    g.logits(h)
    functions = [build_weighted_merge_function(spec.max_audio_tokens, spec.opset)]
    return make_model(b, "fastadasp_prefill", spec.opset, functions, {MERGE_DOMAIN: MERGE_DOMAIN_VERSION})


def _merge(g: DecoderGraph, i: int, h: str, k: str, probs: str, P: str, n: str, q_num: int, first_positions):
    """One WeightedMerge over the audio span [P, P + n) of h; returns the new h, span length and positions."""
    b, a = g.b, g.args
    end = b.op("Add", [P, n])
    with b.scope("received"):
        received = b.slice(g.column_sums(probs), P, end, axis=1)  # [B, n]
    with b.scope("keys"):
        span_keys = g.reshape_dims(b.op("Transpose", [b.slice(k, P, end, axis=2)], perm=[0, 2, 1, 3]), [(0, 2), [a.kv_dim]])
    span = b.slice(h, P, end, axis=1)
    merged, source = weighted_merge_node(b, span, span_keys, received, q_num)
    h = b.concat([b.slice(h, b.const([0]), P, axis=1), merged, b.slice(h, end, b.dim(h, 1), axis=1)], 1)
    if first_positions is not None:
        with b.scope("positions"):
            batch_positions = b.op("Expand", [first_positions, b.concat([b.dim(h, 0), b.dim(first_positions, 1)], 0)])
            audio_positions = b.op("GatherElements", [b.slice(batch_positions, P, end, axis=1), source], axis=1)
            first_positions = b.concat([
                b.slice(batch_positions, b.const([0]), P, axis=1), audio_positions,
                b.slice(batch_positions, end, b.dim(batch_positions, 1), axis=1)], 1)
    if g.spec.debug_outputs:
        b.op("Identity", [source], outputs=[f"merge.{i}.source_index"])
        b.output(f"merge.{i}.source_index", TensorProto.INT64, ["batch", f"merged_len_{i}"])
    return h, b.dim(merged, 1), first_positions


def build_decode(decoder, spec: GraphSpec) -> onnx.ModelProto:
    b = GraphBuilder()
    g = DecoderGraph(b, decoder, spec)
    a = decoder.args
    ids = b.input("input_ids", TensorProto.INT64, ["batch", 1])
    positions = b.input("position_ids", TensorProto.INT64, ["batch", 1])
    lengths = b.input("cache_lengths", TensorProto.INT64, [a.num_layers])
    lora_scale = b.input("lora_scale", g.onnx_dtype, ["batch", a.hidden_size]) if decoder.lora is not None else None
    pasts = []
    for i in range(a.num_layers):
        shape = g.kv_output_shape(f"capacity_{i}")
        pasts.append((b.input(f"past.{i}.key", g.onnx_dtype, shape), b.input(f"past.{i}.value", g.onnx_dtype, shape)))
    with b.scope("embed"):
        h = b.op("Gather", [g.embed, ids])  # [B, 1, D]
    cos, sin = g.rope(positions)
    for i in range(a.num_layers):
        with b.scope(f"layers.{i}"):
            q, k, v = g.qkv(i, h, cos, sin, lora_scale)
            with b.scope("attn"):
                with b.scope("kv_cache"):
                    length = b.op("Gather", [lengths, b.const([i])])  # [1]
                    write_at = b.op("Expand", [b.reshape(length, [1, 1, 1, 1]), b.op("Shape", [k])])
                    past_k, past_v = pasts[i]
                    new_k = b.op("ScatterElements", [past_k, write_at, k], axis=2, outputs=[f"present.{i}.key"])
                    new_v = b.op("ScatterElements", [past_v, write_at, v], axis=2, outputs=[f"present.{i}.value"])
                b.output(f"present.{i}.key", g.onnx_dtype, g.kv_output_shape(f"capacity_{i}"))
                b.output(f"present.{i}.value", g.onnx_dtype, g.kv_output_shape(f"capacity_{i}"))
                with b.scope("mask"):
                    capacity = b.squeeze(b.dim(past_k, 2), [0])
                    slots = b.op("Range", [b.const(0), capacity, b.const(1)])
                    invalid = b.op("Greater", [slots, length])  # valid after this write: 0..length
                    mask = b.op("Where", [invalid, b.const(_MASK_VALUE, np.float32), b.const(0.0, np.float32)])
                out, _ = g.attention(q, new_k, new_v, mask)
                h = g.attention_residual(i, h, out, lora_scale)
            h = g.mlp(i, h)
    g.logits(h)
    return make_model(b, "fastadasp_decode", spec.opset)


def build_prompt_scale(lm, spec: GraphSpec) -> onnx.ModelProto:
    """WavLLM's prompt-aware LoRA scale: prompt_ids [B, T] -> lora_scale [B, D] (the model dtype).

    The decoder runs over the instruction prompt with the LoRA off (every layer, causal attention, no merge),
    then the scale network turns its last-layer states into s = clamp(relu(sum_t w_t o_t), max=3) with
    o = fc2(gelu(fc1(h))) and w = softmax over the prompt of pool(o) (fastadasp/models/wavllm.py,
    PromptScaleNet). The result is what prefill.onnx and decode.onnx take as lora_scale, so a runtime never
    needs PyTorch for it. The decoder weights are the prefill graph's, under the same initializer names."""
    from fastadasp.models.wavllm import MAX_LORA_SCALE

    decoder, net = lm.decoder, lm.scale_net
    b = GraphBuilder()
    g = DecoderGraph(b, decoder, spec)
    ids = b.input("prompt_ids", TensorProto.INT64, ["batch", "prompt_len"])
    with b.scope("embed"):
        h = b.op("Gather", [g.embed, ids])
    with b.scope("positions"):
        length = b.squeeze(b.dim(ids, 1), [0])
        steps = b.op("Range", [b.const(0), length, b.const(1)])
        positions = b.unsqueeze(steps, [0])
    cos, sin = g.rope(positions)
    with b.scope("mask"):
        future = b.op("Greater", [b.unsqueeze(steps, [0]), b.unsqueeze(steps, [1])])
        mask = b.op("Where", [future, b.const(_MASK_VALUE, np.float32), b.const(0.0, np.float32)])
    for i in range(decoder.args.num_layers):
        with b.scope(f"layers.{i}"):
            q, k, v = g.qkv(i, h, cos, sin, None)
            with b.scope("attn"):
                out, _ = g.attention(q, k, v, mask)
                h = g.attention_residual(i, h, out, None)
            h = g.mlp(i, h)
    with b.scope("scale_net"):
        def dense(x, name, module):
            with b.scope(name):
                y = b.op("MatMul", [x, g._w(f"scale_net.{name}.weight_t", module.weight, transpose=True)])
                return b.op("Add", [y, g._w(f"scale_net.{name}.bias", module.bias)])

        inner = dense(h, "fc1", net.fc1)
        with b.scope("gelu"):  # exact GELU: x * (1 + erf(x / sqrt 2)) / 2
            erf = b.op("Erf", [b.op("Mul", [inner, b.const(2 ** -0.5, g.np_dtype)])])
            inner = b.op("Mul", [b.op("Mul", [inner, b.op("Add", [erf, b.const(1.0, g.np_dtype)])]),
                                 b.const(0.5, g.np_dtype)])
        o = dense(inner, "fc2", net.fc2)
        with b.scope("pool"):
            weights = b.op("Softmax", [b.op("Cast", [dense(o, "pool", net.pool)], to=TensorProto.FLOAT)], axis=1)
            weighted = b.op("Mul", [weights, b.op("Cast", [o], to=TensorProto.FLOAT)])
            pooled = b.op("ReduceSum", [weighted, b.const([1])], keepdims=0)  # axes an input since opset 13
        with b.scope("clamp"):
            scale = b.op("Min", [b.op("Relu", [pooled]), b.const(MAX_LORA_SCALE, np.float32)])
            b.op("Cast", [scale], to=g.onnx_dtype, outputs=["lora_scale"])
    b.output("lora_scale", g.onnx_dtype, ["batch", decoder.args.hidden_size])
    # DecoderGraph registers the LM head and final norm, which this graph never reads.
    used = {name for node in b.nodes for name in node.input}
    b.initializers = [t for t in b.initializers if t.name in used]
    return make_model(b, "fastadasp_prompt_scale", spec.opset)
