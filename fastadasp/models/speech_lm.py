"""What every model adapter exposes to the reduction, the exporter and the runtime."""

from __future__ import annotations

import torch
from torch import nn

from fastadasp.core.prompt import PromptInputs, synthetic_token_ids
from fastadasp.models.audio_front_end import AudioFrontEnd, no_front_end
from fastadasp.models.decoder import SpeechDecoder


class SpeechLM(nn.Module):
    """A speech-language model split at the audio span: an audio front-end producing embeddings [B, N, D]
    and a decoder whose prompt is prefix ids + audio embeddings + suffix ids.

    `hf_model` is the complete Hugging Face model the adapter wraps (used as the parity reference).
    """

    family = "decoder"
    needs_lora_scale = False
    # The tiny presets' offline tokenizer: style and special tokens (fastadasp/models/tokenizer.py).
    tiny_tokenizer_style = "sentencepiece"
    tiny_special_tokens: tuple[str, ...] = ("<unk>", "<s>", "</s>")
    tiny_specials_on_top = False

    def __init__(self, name: str, decoder: SpeechDecoder, hf_model: nn.Module | None = None):
        super().__init__()
        self.name = name
        self.decoder = decoder
        self.hf_model = hf_model
        self.checkpoint_path: str | None = None  # set by the loaders; None for tiny presets (random weights)
        self.requires_grad_(False)  # inference only: keeps autograd bookkeeping out of every forward

    @property
    def has_audio_front_end(self) -> bool:
        """Whether encode_audio works (and an audio_encoder.onnx can be exported)."""
        return False

    @property
    def args(self):
        return self.decoder.args

    def encode_audio(self, *args, **kwargs) -> torch.Tensor:
        raise no_front_end(self, "it is a plain decoder")

    def audio_front_end(self) -> AudioFrontEnd:
        """The module that computes encode_audio for a full-length clip, with its named inputs (what
        audio_encoder.onnx is exported from). Raises ValueError for models without a front-end."""
        raise no_front_end(self, "it is a plain decoder")

    # --- text ----------------------------------------------------------------------------------
    def prompt_template(self):
        """This family's prompt format (fastadasp/models/prompt_template.py)."""
        from fastadasp.models.prompt_template import plain_template

        return plain_template(self.family, "<s>", ["</s>"])

    def text_assets(self):
        """(TextTokenizer, PromptTemplate, source): the checkpoint's own tokenizer and the template its chat
        template (or, without one, this family's format) renders; for tiny presets a tokenizer built offline
        for exactly this vocabulary. (None, None, why) when a checkpoint has no tokenizer files."""
        from fastadasp.models.tokenizer import TextTokenizer, build_tiny_tokenizer, checkpoint_tokenizer

        if self.checkpoint_path is None:
            tokenizer = build_tiny_tokenizer(self.tiny_tokenizer_style, self.args.vocab_size, list(self.tiny_special_tokens),
                                             top_specials=self.tiny_specials_on_top)
            return TextTokenizer(tokenizer), self.prompt_template(), \
                f"built offline for {self.name}: {self.tiny_tokenizer_style} BPE on a fixed text"
        tokenizer, source = checkpoint_tokenizer(self.checkpoint_path)
        if tokenizer is None:
            return None, None, source
        text = TextTokenizer(tokenizer)
        return text, self.checkpoint_template(text), source

    def checkpoint_template(self, tokenizer):
        """The template for a real checkpoint: its chat template when it renders one audio placeholder, else
        this family's format; special tokens the tokenizer lacks are dropped from bos / stop."""
        import dataclasses

        from fastadasp.models.prompt_template import checkpoint_chat_template, template_from_chat_template
        from fastadasp.models.tokenizer import checkpoint_directory

        default = self.prompt_template()
        bos = default.bos if default.bos and tokenizer.token_id(default.bos) is not None else None
        stop = [t for t in default.stop if tokenizer.token_id(t) is not None]
        placeholder = getattr(self, "audio_placeholder", None)
        chat = checkpoint_chat_template(checkpoint_directory(self.checkpoint_path)) if placeholder else None
        if chat is not None:
            try:
                return template_from_chat_template(chat, self.family, placeholder, bos=bos, stop=stop,
                                                   scale_prompt=default.scale_prompt,
                                                   source="the checkpoint's chat template")
            except Exception:  # noqa: BLE001 - a template we cannot render falls back to the family format
                pass
        return dataclasses.replace(default, bos=bos, stop=stop)

    def prompt_lora_scale(self, prompt_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The per-request LoRA scale [B, D] (WavLLM); other families have no prompt-aware LoRA."""
        raise ValueError(f"model {self.name!r} has no prompt-aware LoRA, so it takes no lora_scale")

    def synthetic_prompt(self, batch_size: int = 1, seed: int = 0, audio_tokens: int = 48,
                         prefix_tokens: int = 6, suffix_tokens: int = 4):
        """A reproducible random request (token ids + audio), for demos and tests; no files needed."""
        gen = torch.Generator().manual_seed(seed)
        vocab = self.args.vocab_size
        prefix = synthetic_token_ids(vocab, batch_size, prefix_tokens, gen)
        suffix = synthetic_token_ids(vocab, batch_size, suffix_tokens, gen)
        audio = self._synthetic_audio(batch_size, audio_tokens, gen)
        scale = self.prompt_lora_scale(prefix) if self.needs_lora_scale else None
        return PromptInputs(prefix, audio, suffix, scale)

    def synthetic_audio_features(self, batch_size: int, gen: torch.Generator, frames: int | None = None
                                 ) -> dict[str, torch.Tensor]:
        """Random front-end inputs for clips of `frames` frames (default: a full clip), named like
        audio_encoder.onnx's inputs, in encode_audio's argument order."""
        return self.audio_front_end().synthetic_inputs(batch_size, gen, frames=frames)

    def _synthetic_audio(self, batch_size: int, audio_tokens: int, gen: torch.Generator) -> torch.Tensor:
        if self.has_audio_front_end:
            return self.encode_audio(*self.synthetic_audio_features(batch_size, gen).values())
        # Without a front-end: embeddings at the scale of the token embedding table.
        table = self.decoder.base.embed_tokens.weight
        return torch.randn(batch_size, audio_tokens, table.shape[1], generator=gen) * float(table.detach().std())

    def to_dtype(self, dtype: torch.dtype) -> "SpeechLM":
        self.to(dtype)
        return self
