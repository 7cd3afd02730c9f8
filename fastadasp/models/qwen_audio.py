"""Adapter for Qwen-Audio (v1, the FastAdaSP reference model), converted to the Qwen2 layout.

Qwen-7B v1 is remote code; its decoder is a Qwen2 decoder in other clothes (fused c_attn with bias,
w2 -> gate, w1 -> up, c_proj -> down), so fastadasp/models/qwen_audio_checkpoint.py maps it onto transformers'
`Qwen2ForCausalLM` and the shared reduced decoder runs it. The audio encoder is Whisper-style with an
average pool and a projection to the LLM width; its output span is wrapped in learned audio-bos/eos
embeddings, so the audio span the decoder merges is n + 2 tokens, as in the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from fastadasp.core.shapes import DecoderArgs
from fastadasp.core.manifest import AudioTokenBranch
from fastadasp.models.audio_front_end import (
    FRAMES,
    AudioFrontEnd,
    AudioInput,
    no_front_end,
    whisper_audio_spec,
    whisper_encoder_forward,
    whisper_encoder_stages,
    whisper_frames,
)
from fastadasp.models.decoder import SpeechDecoder
from fastadasp.models.speech_lm import SpeechLM

QWEN_AUDIO_7B = DecoderArgs(
    vocab_size=155947, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
    intermediate_size=11008, max_position_embeddings=8192,
)


class QwenAudioEncoder(nn.Module):
    """Whisper-style encoder (conv stem, transformer, avg-pool) + projection, with audio bos/eos embeddings."""

    def __init__(self, encoder: nn.Module, output_dim: int):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(encoder.config.d_model, output_dim)
        self.audio_bos_eos = nn.Parameter(torch.randn(2, output_dim) * 0.02)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, mel_bins, frames] (any clip length up to the window) -> [B, n + 2, D]"""
        h = self.proj(whisper_encoder_forward(self.encoder, mel))
        bos = self.audio_bos_eos[0].expand(h.shape[0], 1, -1)
        eos = self.audio_bos_eos[1].expand(h.shape[0], 1, -1)
        return torch.cat([bos, h, eos], dim=1)


class _NamedMelInput(nn.Module):
    """encoder(mel) with its input named input_features (the exported graph's input name)."""

    def __init__(self, encoder: QwenAudioEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_features)


class QwenAudioLM(SpeechLM):
    family = "qwen-audio"
    tiny_tokenizer_style = "byte_level"
    tiny_special_tokens = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    tiny_specials_on_top = True

    def __init__(self, hf_qwen2, audio_encoder: QwenAudioEncoder | None, name: str = "qwen-audio"):
        super().__init__(name=name, decoder=SpeechDecoder(hf_qwen2.model, hf_qwen2.lm_head), hf_model=hf_qwen2)
        self.audio_encoder = audio_encoder

    @property
    def has_audio_front_end(self) -> bool:
        return self.audio_encoder is not None

    @torch.no_grad()
    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        if self.audio_encoder is None:
            raise no_front_end(self, "it was loaded without its audio encoder")
        return self.audio_encoder(mel)

    def audio_front_end(self) -> AudioFrontEnd:
        if self.audio_encoder is None:
            raise no_front_end(self, "it was loaded without its audio encoder")
        encoder = self.audio_encoder.encoder
        cfg = encoder.config
        # One 30 s window per clip, wrapped in the learned audio bos / eos embeddings (2 tokens).
        spec = whisper_audio_spec(cfg.num_mel_bins, whisper_frames(cfg),
                                  [AudioTokenBranch(FRAMES, whisper_encoder_stages(encoder))], long_audio="truncate",
                                  extra_tokens=2)
        return AudioFrontEnd(_NamedMelInput(self.audio_encoder), {"input_features": AudioInput((cfg.num_mel_bins, FRAMES))},
                             spec)

    def prompt_template(self):
        from fastadasp.models.prompt_template import qwen_audio_template

        return qwen_audio_template()


def qwen2_config_for(num_layers: int, hidden: int, heads: int, intermediate: int, vocab: int, max_positions: int = 8192):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=num_layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    )


def assemble(decoder_weights: dict[str, torch.Tensor], config, audio_encoder, name: str) -> QwenAudioLM:
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM(config).eval()
    model.load_state_dict(decoder_weights, strict=True)
    return QwenAudioLM(model, audio_encoder, name=name)


TINY = dict(num_layers=6, hidden=64, heads=4, intermediate=128, vocab=300)


def tiny_audio_encoder(output_dim: int) -> QwenAudioEncoder:
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    enc = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(
        num_mel_bins=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
        max_source_positions=60,
    ))
    return QwenAudioEncoder(enc.eval(), output_dim).eval()


def build_tiny(seed: int = 0) -> QwenAudioLM:
    """Tiny Qwen-Audio: a synthetic v1 checkpoint (released key names) converted like a real one."""
    from fastadasp.models.qwen_audio_checkpoint import convert_qwen_audio_state_dict
    from fastadasp.models.synthetic import qwen_audio_synthetic_state_dict

    sd = qwen_audio_synthetic_state_dict(
        TINY["num_layers"], TINY["hidden"], TINY["heads"], TINY["intermediate"], TINY["vocab"], seed=seed
    )
    groups = convert_qwen_audio_state_dict(sd, TINY["num_layers"], TINY["heads"])
    torch.manual_seed(seed)
    return assemble(groups["decoder"], qwen2_config_for(**TINY), tiny_audio_encoder(TINY["hidden"]), "tiny-qwen-audio")


def load(path: str) -> QwenAudioLM:
    """Load a local Qwen-Audio v1 directory (config.json + *.safetensors / *.bin) without its remote code."""
    import glob
    import json
    import os

    from fastadasp.models.qwen_audio_checkpoint import convert_qwen_audio_state_dict

    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        from safetensors.torch import load_file

        state.update(load_file(file))
    if not state:
        for file in sorted(glob.glob(os.path.join(path, "pytorch_model*.bin"))):
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    if not state:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights under {path}")
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    groups = convert_qwen_audio_state_dict(state, layers, heads)
    config = qwen2_config_for(layers, cfg["hidden_size"], heads, cfg["intermediate_size"] // 2, cfg["vocab_size"],
                              cfg.get("max_position_embeddings", 8192))
    # The released encoder (groups["audio"]: v1's transformer.audio.* names) is not mapped onto QwenAudioEncoder:
    # its key layout has not been matched against that module, so this model has no front-end and takes audio
    # embeddings directly.
    lm = assemble(groups["decoder"], config, None, "qwen-audio")
    lm.checkpoint_path = str(path)
    return lm
