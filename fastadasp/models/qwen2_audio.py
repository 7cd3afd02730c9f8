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


class ClipFrontEnd(nn.Module):
    """audio tower -> multi-modal projector on one clip of any length up to the tower's window (the module
    audio_encoder.onnx is exported from). Hugging Face runs the tower on a zero-padded 30 s window with an
    attention mask and keeps the valid rows; running it on the valid frames alone is the same apart from the
    last conv frame at the clip's end, and costs a short clip proportionally less."""

    def __init__(self, tower: nn.Module, projector: nn.Module):
        super().__init__()
        self.tower = tower
        self.projector = projector

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.projector(whisper_encoder_forward(self.tower, input_features))


class Qwen2AudioLM(SpeechLM):
    family = "qwen2-audio"
    tiny_tokenizer_style = "byte_level"
    # Qwen's special tokens sit at the top of the vocabulary; <|AUDIO|> last, at the tiny config's audio_token_id.
    tiny_special_tokens = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>")
    tiny_specials_on_top = True
    audio_placeholder = "<|AUDIO|>"  # what the processor expands into the audio span

    def __init__(self, hf_model, name: str = "qwen2-audio"):
        decoder = SpeechDecoder(hf_model.model.language_model, hf_model.lm_head)
        super().__init__(name=name, decoder=decoder, hf_model=hf_model)
        self.audio_token_id = hf_model.config.audio_token_id

    def prompt_template(self):
        from fastadasp.models.prompt_template import qwen2_audio_template

        return qwen2_audio_template()

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
        module = ClipFrontEnd(tower, self.hf_model.model.multi_modal_projector)
        spec = whisper_audio_spec(self.num_mel_bins, self.feature_frames,
                                  [AudioTokenBranch(FRAMES, whisper_encoder_stages(tower))], long_audio="truncate")
        return AudioFrontEnd(module, {"input_features": AudioInput((self.num_mel_bins, FRAMES))}, spec)

    @torch.no_grad()
    def encode_audio(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_features [B, mel, F] -> audio embeddings [B, N, D]. Without a mask: F is any clip length up to the
        window, all valid. With feature_attention_mask (F = the full window, as the Hugging Face processor pads):
        the Hugging Face computation, N = the valid audio tokens (equal-length batch)."""
        tower = self.hf_model.model.audio_tower
        if feature_attention_mask is None or bool(feature_attention_mask.all()):
            return self.audio_front_end().module(input_features)
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
    lm = Qwen2AudioLM(model)
    lm.checkpoint_path = str(path)
    return lm
