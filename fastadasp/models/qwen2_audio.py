"""Adapter for Qwen2-Audio (transformers' `Qwen2AudioForConditionalGeneration`).

The Hugging Face model splices audio by expanding `<|AUDIO|>` placeholders and `masked_scatter`-ing the
projected encoder output into them. We keep its encoder and projector for `encode_audio` and hand its
language model (Qwen2Model + lm_head) to the reduced decoder, so the audio span is explicit: prefix ids,
audio embeddings, suffix ids.
"""

from __future__ import annotations

import torch
from torch import nn

from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.audio_front_end import AudioFrontEnd, AudioInput, no_front_end, whisper_frames
from fastadasp.models.decoder import SpeechDecoder
from fastadasp.models.speech_lm import SpeechLM

# Qwen2-Audio-7B's decoder (its released config), for planning without a checkpoint.
QWEN2_AUDIO_7B = DecoderArgs(
    vocab_size=156032, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
    intermediate_size=11008, max_position_embeddings=8192,
)


def tiny_config(seed_vocab: int = 320):
    """A tiny random-weight Qwen2-Audio of the released structure (GQA decoder, Whisper-style encoder)."""
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 16,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "max_source_positions": 60,  # 120 mel frames -> 60 after the stride-2 conv -> 30 audio tokens
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": seed_vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
        },
        audio_token_id=seed_vocab - 1,
    )


class FullClipFrontEnd(nn.Module):
    """`Qwen2AudioLM.encode_audio` for the full-length clip, in a form torch.export can trace: audio tower
    (with the padding mask Hugging Face builds) -> multi-modal projector -> the first N rows.

    encode_audio itself cannot be traced: its equal-length check runs `set(out_lengths.tolist())` on a
    data-dependent tensor. Here the valid lengths, which depend only on the frame count, are worked out once
    when the wrapper is built instead of from a mask tensor in the graph."""

    def __init__(self, tower: nn.Module, projector: nn.Module, frames: int):
        super().__init__()
        self.tower = tower
        self.projector = projector
        feat_len, out_len = tower._get_feat_extract_output_lengths(torch.tensor([frames]))
        self.feat_len = int(feat_len[0])
        self.out_len = int(out_len[0])
        self.max_len = (frames - 2) // 2 + 1

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        batch = input_features.shape[0]
        valid = torch.arange(self.max_len, device=input_features.device) < self.feat_len
        mask_2d = valid.long().unsqueeze(0).expand(batch, -1)
        dummy = input_features.new_zeros(batch, self.max_len, 1)
        attn_mask = create_bidirectional_mask(config=self.tower.config, inputs_embeds=dummy, attention_mask=mask_2d)
        hidden = self.tower(input_features, attention_mask=attn_mask).last_hidden_state
        return self.projector(hidden)[:, : self.out_len]


class Qwen2AudioLM(SpeechLM):
    family = "qwen2-audio"

    def __init__(self, hf_model, name: str = "qwen2-audio"):
        decoder = SpeechDecoder(hf_model.model.language_model, hf_model.lm_head)
        super().__init__(name=name, decoder=decoder, hf_model=hf_model)
        self.audio_token_id = hf_model.config.audio_token_id

    @property
    def num_mel_bins(self) -> int:
        return self.hf_model.config.audio_config.num_mel_bins

    @property
    def feature_frames(self) -> int:
        """Mel frames the encoder expects (it is trained on padded 30 s windows)."""
        return whisper_frames(self.hf_model.config.audio_config)

    @property
    def has_audio_front_end(self) -> bool:
        return True

    def audio_front_end(self) -> AudioFrontEnd:
        tower = getattr(self.hf_model.model, "audio_tower", None)
        if tower is None:
            raise no_front_end(self, "the Hugging Face model has no audio_tower")
        module = FullClipFrontEnd(tower, self.hf_model.model.multi_modal_projector, self.feature_frames)
        return AudioFrontEnd(module, {"input_features": AudioInput((self.num_mel_bins, self.feature_frames))})

    @torch.no_grad()
    def encode_audio(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_features [B, mel, frames] -> audio embeddings [B, N, D] (N = valid audio tokens; equal-length batch)."""
        tower = self.hf_model.model.audio_tower
        if feature_attention_mask is None:
            feature_attention_mask = torch.ones(input_features.shape[0], input_features.shape[2], dtype=torch.long)
        _, out_lengths = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
        if len(set(out_lengths.tolist())) != 1:
            raise ValueError("a batch must hold clips of equal length (the reduced graphs share one audio span length)")
        # Build the same padding mask Hugging Face builds, so embeddings match its forward exactly.
        from transformers.masking_utils import create_bidirectional_mask

        feat_lengths, _ = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
        max_len = (input_features.shape[2] - 2) // 2 + 1
        mask_2d = (torch.arange(max_len)[None, :] < feat_lengths[:, None]).long()
        dummy = torch.zeros(input_features.shape[0], max_len, 1, dtype=input_features.dtype)
        attn_mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask_2d)
        hidden = tower(input_features, attention_mask=attn_mask).last_hidden_state
        embeds = self.hf_model.model.multi_modal_projector(hidden)
        return embeds[:, : int(out_lengths[0])]

    def hf_input_ids(self, prefix_ids: torch.Tensor, num_audio: int, suffix_ids: torch.Tensor) -> torch.Tensor:
        """The Hugging Face prompt with `num_audio` expanded audio placeholders (for reference runs)."""
        audio = torch.full((prefix_ids.shape[0], num_audio), self.audio_token_id, dtype=torch.long)
        return torch.cat([prefix_ids, audio, suffix_ids], dim=1)


def build_tiny(seed: int = 0) -> Qwen2AudioLM:
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(tiny_config()).eval()
    return Qwen2AudioLM(model, name="tiny-qwen2-audio")


def load(path: str) -> Qwen2AudioLM:
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(path, local_files_only=True).eval()
    return Qwen2AudioLM(model)
