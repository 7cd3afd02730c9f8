"""Qwen-Audio (v1) checkpoint converter: key layout, bit-exact round trips, and numerical equivalence with the
Qwen v1 reference implementation (tests/models/checkpoint_reference.py)."""

from __future__ import annotations

import re

import pytest
import torch

from checkpoint_reference import QWEN, assert_same_dicts, qwen2_model, qwen_sd, qwen_v1_block, qwen_v1_logits
from fastadasp.models.qwen_audio_checkpoint import convert_qwen_audio_state_dict, qwen_audio_state_dict_from_hf


def test_qwen_audio_conversion_loads_and_matches_v1_reference():
    sd = qwen_sd(seed=7)
    groups = convert_qwen_audio_state_dict(sd, QWEN["num_layers"], QWEN["heads"])
    model = qwen2_model()
    assert {k: v.shape for k, v in groups["decoder"].items()} == {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(groups["decoder"], strict=True)
    assert groups["unused"] == {}
    assert "blocks.1.attn.query.weight" in groups["audio"] and "audio_bos_eos_token.weight" in groups["audio"]
    assert "blocks.0.attn.key.bias" not in groups["audio"]  # v1's key projection has no bias
    assert len(groups["audio"]) == sum(k.startswith("transformer.audio.") for k in sd)
    # c_attn splits in q, k, v order; w2 is the gate (through silu), w1 the up projection.
    c_attn = sd["transformer.h.1.attn.c_attn.weight"]
    assert torch.equal(groups["decoder"]["model.layers.1.self_attn.k_proj.weight"], c_attn[64:128])
    assert torch.equal(groups["decoder"]["model.layers.1.mlp.gate_proj.weight"], sd["transformer.h.1.mlp.w2.weight"])

    ids = torch.tensor([3, 77, 12, 12, 100, 0, 45, 8, 61])
    with torch.no_grad():
        hf = model(ids[None]).logits[0]
        ref = qwen_v1_logits(sd, QWEN["num_layers"], QWEN["heads"], ids)
        # Single decoder layer as well (HF Qwen2DecoderLayer vs the v1 block).
        layer = model.model.layers[0]
        x = torch.randn(1, ids.shape[0], QWEN["hidden"], generator=torch.Generator().manual_seed(8))
        pos = model.model.rotary_emb(x, torch.arange(ids.shape[0])[None])
        mask = torch.full((ids.shape[0],) * 2, float("-inf")).triu(1)[None, None]
        out = layer(x, attention_mask=mask, position_embeddings=pos)
        out = out[0] if isinstance(out, tuple) else out
        ref_layer = qwen_v1_block(sd, 0, x[0], QWEN["heads"])
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(hf, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0], ref_layer, rtol=1e-5, atol=1e-5)



def test_qwen_audio_round_trip_is_bit_exact():
    sd = qwen_sd(seed=9)
    sd["transformer.h.0.attn.c_proj.bias"] = torch.zeros(QWEN["hidden"])  # no_bias=false but zero: kept aside
    sd["some.other.buffer"] = torch.arange(4)
    groups = convert_qwen_audio_state_dict(sd, QWEN["num_layers"], QWEN["heads"])
    assert set(groups["unused"]) == {"transformer.h.0.attn.c_proj.bias", "some.other.buffer"}
    assert_same_dicts(qwen_audio_state_dict_from_hf(groups, QWEN["num_layers"], QWEN["heads"]), sd)
    bf = {k: v.bfloat16() if v.is_floating_point() else v for k, v in sd.items()}
    assert_same_dicts(qwen_audio_state_dict_from_hf(convert_qwen_audio_state_dict(bf, 2, 4), 2), bf)


def test_qwen_audio_missing_key_and_nonzero_bias_raise():
    sd = qwen_sd()
    gone = "transformer.h.1.mlp.w2.weight"
    missing = {k: v for k, v in sd.items() if k != gone}
    with pytest.raises(ValueError, match=re.escape(gone)) as err:
        convert_qwen_audio_state_dict(missing, QWEN["num_layers"], QWEN["heads"])
    assert "Qwen-Audio" in str(err.value)
    biased = dict(sd)
    biased["transformer.h.1.mlp.c_proj.bias"] = torch.ones(QWEN["hidden"])
    with pytest.raises(ValueError, match="mlp.c_proj.bias"):
        convert_qwen_audio_state_dict(biased, QWEN["num_layers"], QWEN["heads"])
    with pytest.raises(ValueError):
        convert_qwen_audio_state_dict(sd, QWEN["num_layers"], 5)  # 64 is not 5 x an even head_dim
