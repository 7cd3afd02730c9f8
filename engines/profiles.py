"""TensorRT optimization profiles implied by a manifest: what shapes each engine must accept.

Audio lengths come from the manifest's audio_tokens_range; a layer's KV length follows the manifest's
length rule, which is monotone in N, so the longest input bounds every layer's capacity.
"""

from __future__ import annotations

from fastadasp.core.manifest import Manifest
from fastadasp.engines.builder import ShapeProfile
from fastadasp.reduction.schedule import span_lengths_for_ratios


def prefill_profile(manifest: Manifest, max_batch: int, max_text_tokens: int, opt_text_tokens: int = 64) -> ShapeProfile:
    d = manifest.model.args.hidden_size
    n = manifest.audio_tokens_range
    opt_text = min(opt_text_tokens, max_text_tokens)
    prefix_opt, suffix_opt = max(1, opt_text * 3 // 4), max(1, opt_text // 4)
    inputs = {
        "prefix_ids": ((1, 1), (1, prefix_opt), (max_batch, max_text_tokens)),
        "audio_embeds": ((1, n.min, d), (1, n.opt, d), (max_batch, n.max, d)),
        "suffix_ids": ((1, 1), (1, suffix_opt), (max_batch, max_text_tokens)),
    }
    if manifest.model.prompt_lora:
        inputs["lora_scale"] = ((1, d), (1, d), (max_batch, d))
    return ShapeProfile(inputs)


def decode_profile(manifest: Manifest, max_batch: int, max_text_tokens: int, max_new_tokens: int,
                   opt_text_tokens: int = 64) -> ShapeProfile:
    args = manifest.model.args
    n = manifest.audio_tokens_range
    d, hkv, layers = args.hidden_size, args.num_kv_heads, args.num_layers
    longest = span_lengths_for_ratios(manifest.ratios, n.max)
    nominal = span_lengths_for_ratios(manifest.ratios, n.opt)
    inputs = {
        "input_ids": ((1, 1), (1, 1), (max_batch, 1)),
        "position_ids": ((1, 1), (1, 1), (max_batch, 1)),
        "cache_lengths": ((layers,), (layers,), (layers,)),
    }
    if manifest.model.prompt_lora:
        inputs["lora_scale"] = ((1, d), (1, d), (max_batch, d))
    for i in range(layers):
        cap_opt = min(opt_text_tokens, max_text_tokens) + nominal[i] + max_new_tokens
        cap_max = max_text_tokens + longest[i] + max_new_tokens
        shape = ((1, hkv, 1, args.head_dim), (1, hkv, cap_opt, args.head_dim), (max_batch, hkv, cap_max, args.head_dim))
        inputs[f"past.{i}.key"] = shape
        inputs[f"past.{i}.value"] = shape
    return ShapeProfile(inputs)


def audio_encoder_profile(manifest: Manifest, max_batch: int) -> ShapeProfile:
    """Every front-end dim is static except the batch ("batch")."""
    inputs = {}
    for name, spec in manifest.graphs["audio_encoder"].inputs.items():
        dims = [(1, 1, max_batch) if d == "batch" else (d, d, d) for d in spec.shape]
        inputs[name] = tuple(tuple(dim[k] for dim in dims) for k in range(3))
    return ShapeProfile(inputs)


def profiles_for_manifest(manifest: Manifest, max_batch: int, max_text_tokens: int,
                          max_new_tokens: int) -> dict[str, ShapeProfile]:
    profiles = {
        "prefill": prefill_profile(manifest, max_batch, max_text_tokens),
        "decode": decode_profile(manifest, max_batch, max_text_tokens, max_new_tokens),
    }
    if "audio_encoder" in manifest.graphs:
        profiles["audio_encoder"] = audio_encoder_profile(manifest, max_batch)
    return profiles
