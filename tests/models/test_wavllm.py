import pytest
import torch

from fastadasp.models.wavllm import front_end_state_dict, released_front_end_state_dict, tiny_front_end


def test_front_end_round_trips_through_the_released_key_layout():
    torch.manual_seed(0)
    source = tiny_front_end(hidden_size=64).eval()
    released = released_front_end_state_dict(source)
    assert any(k.startswith("audio_encoder.model.") for k in released)
    assert any(k.startswith("audio_encoder.subsample.conv_layers.1.") for k in released)
    assert "wavlm_encoder.output_weights" in released
    assert any(k.startswith("wavlm_audio_proj.") for k in released)
    torch.manual_seed(1)
    target = tiny_front_end(hidden_size=64).eval()
    target.load_state_dict(front_end_state_dict(released), strict=True)
    mel, wave = torch.randn(1, 16, 200), torch.randn(1, 32000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(target(mel, wave), source(mel, wave))


def test_unknown_front_end_key_is_named():
    with pytest.raises(ValueError, match="wavlm_encoder_typo"):
        front_end_state_dict({"wavlm_encoder_typo.weight": torch.zeros(1)})


def test_front_end_runs_at_12_5_hz(tiny):
    lm = tiny("tiny-wavllm")
    features = lm.synthetic_audio_features(2, torch.Generator().manual_seed(0))
    audio = lm.encode_audio(*features.values())
    # 200 mel frames = 2 s at 100 Hz -> Whisper 100 frames (50 Hz) -> 25 tokens (12.5 Hz)
    assert audio.shape == (2, 25, lm.args.hidden_size)
