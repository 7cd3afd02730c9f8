"""Synthetic checkpoints carry the released key names and are deterministic per seed."""

from __future__ import annotations

from checkpoint_reference import RANK, SHAPE, assert_same_dicts
from fastadasp.models.synthetic import wavllm_synthetic_state_dict
from fastadasp.models.wavllm_checkpoint import WAVLLM_DECODER_PREFIX as P


def test_wavllm_synthetic_uses_released_key_names():
    sd = wavllm_synthetic_state_dict(SHAPE, RANK)
    for key in (
        P + "tok_embeddings.weight", P + "layers.1.attention.wq.weight", P + "layers.0.feed_forward.w3.weight",
        P + "layers.0.attention_norm.weight", P + "layers.1.ffn_norm.weight", P + "norm.weight", P + "output.weight",
        P + "layers.0.attention.wq_lora_A", P + "layers.1.attention.wo_lora_B", P + "scale_fc_1.weight",
        P + "scale_fc_2.bias", P + "scale_weight_attention.weight", "audio_encoder.projector.weight",
        "wavlm_encoder.output_weights", "wavlm_audio_proj.weight",
    ):
        assert key in sd, key
    assert sd[P + "layers.0.attention.wq_lora_A"].shape == (64, 4)  # (dim, r) as in Attention_LoRA
    assert sd[P + "layers.0.attention.wq_lora_B"].shape == (4, 64)  # (r, dim)
    # Deterministic per seed.
    assert_same_dicts(sd, wavllm_synthetic_state_dict(SHAPE, RANK))
