"""Shape profiles: validation, and the profiles a manifest implies for each engine."""

from __future__ import annotations

import pytest

from fastadasp.core.errors import InvalidOption
from fastadasp.core.manifest import Manifest
from fastadasp.engines.profile import ShapeProfile, decode_profile, prefill_profile, profiles_for_manifest


def test_shape_profile_validation():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile({"x": ((4, 1), (2, 1), (1, 1))})
    with pytest.raises(ValueError, match="ranks differ"):
        ShapeProfile({"x": ((1,), (1, 2), (1, 2))})
    with pytest.raises(ValueError, match=r"needs \(min, opt, max\)"):
        ShapeProfile({"x": ((1,), (2,))})
    assert ShapeProfile({"x": ([1, 2], [2, 2], [3, 2])}).inputs["x"] == ((1, 2), (2, 2), (3, 2))


def test_to_json_is_sorted_lists():
    profile = ShapeProfile({"b": ((1,), (2,), (3,)), "a": ((1, 1), (1, 1), (1, 1))})
    assert list(profile.to_json()) == ["a", "b"] and profile.to_json()["b"] == [[1], [2], [3]]


def test_profiles_follow_the_manifest(tiny_llama_export):
    manifest = Manifest.load(tiny_llama_export)
    args = manifest.model.args
    profiles = profiles_for_manifest(manifest, max_batch=2, max_text_tokens=16, max_new_tokens=8)
    assert set(profiles) == {"prefill", "decode"}  # tiny-llama has no audio encoder

    prefill = profiles["prefill"].inputs
    assert prefill["audio_embeds"] == ((1, 1, args.hidden_size), (1, 24, args.hidden_size), (2, 48, args.hidden_size))
    assert prefill["prefix_ids"][2] == prefill["suffix_ids"][2] == (2, 16)
    assert "lora_scale" not in prefill

    decode = profiles["decode"].inputs
    assert decode["cache_lengths"] == ((args.num_layers,),) * 3
    capacities = [decode[f"past.{i}.key"][2][2] for i in range(args.num_layers)]
    # Layer 0 sees every audio token (the schedule merges from layer 1); later layers hold fewer.
    assert capacities[0] == 16 + 48 + 8
    assert capacities == sorted(capacities, reverse=True) and capacities[-1] < capacities[0]
    for i in range(args.num_layers):
        key = decode[f"past.{i}.key"]
        assert key == decode[f"past.{i}.value"]
        assert key[2] == (2, args.num_kv_heads, capacities[i], args.head_dim)


def test_profile_bounds_name_the_option(tiny_llama_export):
    manifest = Manifest.load(tiny_llama_export)
    with pytest.raises(InvalidOption, match="^--max-batch must be >= 1, got 0$"):
        prefill_profile(manifest, 0, 16)
    with pytest.raises(InvalidOption, match="^--max-new-tokens must be >= 1, got 0$"):
        decode_profile(manifest, 1, 16, 0)
