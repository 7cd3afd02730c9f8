"""Optimization profiles: the shapes an engine accepts, and the ones a manifest's graphs need.

Audio lengths come from the manifest's audio_tokens_range; a layer's KV length follows the manifest's
length rule, which is monotone in N, so the longest input bounds every layer's capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastadasp.core.errors import InvalidOption
from fastadasp.core.manifest import Manifest

Shape = tuple[int, ...]


@dataclass
class ShapeProfile:
    """One optimization profile: input name -> (min_shape, opt_shape, max_shape)."""

    inputs: dict[str, tuple[Shape, Shape, Shape]]

    def __post_init__(self):
        self.inputs = {str(name): _checked(name, shapes) for name, shapes in self.inputs.items()}

    def to_json(self) -> dict[str, list[list[int]]]:
        return {k: [list(s) for s in v] for k, v in sorted(self.inputs.items())}


def _checked(name: str, shapes) -> tuple[Shape, Shape, Shape]:
    if len(shapes) != 3:
        raise ValueError(f"profile for input {name!r} needs (min, opt, max) shapes, got {shapes!r}")
    mn, opt, mx = (tuple(int(d) for d in s) for s in shapes)
    if not len(mn) == len(opt) == len(mx):
        raise ValueError(f"profile for input {name!r}: min/opt/max ranks differ: {mn}, {opt}, {mx}")
    if any(d < 0 for d in mn) or not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
        raise ValueError(f"profile for input {name!r} must satisfy 0 <= min <= opt <= max per dimension: "
                         f"min={mn} opt={opt} max={mx}")
    return mn, opt, mx


# --------------------------------------------------------------------------------------------- from a manifest


def _check_bounds(**bounds: int) -> None:
    """Profile bounds come from options (--max-batch ...); name the option rather than an input's shape."""
    for name, value in bounds.items():
        if value < 1:
            raise InvalidOption(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def prefill_profile(manifest: Manifest, max_batch: int, max_text_tokens: int, opt_text_tokens: int = 64) -> ShapeProfile:
    """prefix_ids [B, P], audio_embeds [B, N, D], suffix_ids [B, S] (+ lora_scale [B, D]).

    B <= max_batch, P and S <= max_text_tokens, N within the manifest's audio_tokens_range.
    """
    _check_bounds(max_batch=max_batch, max_text_tokens=max_text_tokens)
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
    """input_ids / position_ids [B, 1], cache_lengths [L], past.{i}.key/value [B, Hkv, C_i, d].

    C_i <= max_text_tokens + n_i(N max) + max_new_tokens: layer i's capacity for the longest prompt.
    """
    # The reduction package imports torch; only this function needs its length rule.
    from fastadasp.reduction.schedule import span_lengths_for_ratios

    _check_bounds(max_batch=max_batch, max_text_tokens=max_text_tokens, max_new_tokens=max_new_tokens)
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
    """The batch up to max_batch; the time axis ("frames" / "samples") over the range the manifest's audio entry
    gives (one clip at most); every other dim is static."""
    _check_bounds(max_batch=max_batch)
    dynamic = manifest.audio.dims if manifest.audio is not None else {}
    inputs = {}
    for name, spec in manifest.graphs["audio_encoder"].inputs.items():
        dims = []
        for d in spec.shape:
            if d == "batch":
                dims.append((1, 1, max_batch))
            elif isinstance(d, str):
                if d not in dynamic:
                    raise ValueError(f"audio encoder input {name!r} has dynamic dim {d!r} with no range in the manifest")
                dims.append(tuple(dynamic[d]))
            else:
                dims.append((d, d, d))
        inputs[name] = tuple(tuple(dim[k] for dim in dims) for k in range(3))
    return ShapeProfile(inputs)


def prompt_scale_profile(manifest: Manifest, max_batch: int, max_text_tokens: int) -> ShapeProfile:
    """WavLLM's prompt-scale graph: prompt ids [B, T] up to the export's text budget."""
    _check_bounds(max_batch=max_batch, max_text_tokens=max_text_tokens)
    opt = min(16, max_text_tokens)
    return ShapeProfile({"prompt_ids": ((1, 1), (1, opt), (max_batch, max_text_tokens))})


def profiles_for_manifest(manifest: Manifest, max_batch: int, max_text_tokens: int,
                          max_new_tokens: int) -> dict[str, ShapeProfile]:
    """role ("prefill", "decode", and "audio_encoder" / "prompt_scale" when exported) -> its engine's profile."""
    profiles = {
        "prefill": prefill_profile(manifest, max_batch, max_text_tokens),
        "decode": decode_profile(manifest, max_batch, max_text_tokens, max_new_tokens),
    }
    if "audio_encoder" in manifest.graphs:
        profiles["audio_encoder"] = audio_encoder_profile(manifest, max_batch)
    if "prompt_scale" in manifest.graphs:
        profiles["prompt_scale"] = prompt_scale_profile(manifest, max_batch, max_text_tokens)
    return profiles
