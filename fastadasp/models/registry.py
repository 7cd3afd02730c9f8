"""Model names -> adapters, tiny random-weight presets, and the built-in decoder shapes used for planning.

Loading is from local paths only (a directory or file the user names); nothing is fetched from a hub.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

from fastadasp.core.errors import UserError
from fastadasp.core.shapes import DecoderArgs


class CheckpointError(UserError, ValueError):
    """A checkpoint path that does not hold a readable checkpoint of the named model."""


class UnknownModelError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    description: str
    builtin_args: DecoderArgs | None  # the released shape, so planning needs no checkpoint
    build_tiny: Callable | None = None  # tiny presets build offline with random weights
    load: Callable[[str], object] | None = None  # local path -> SpeechLM

    @property
    def is_preset(self) -> bool:
        return self.build_tiny is not None


def _specs() -> dict[str, ModelSpec]:
    from fastadasp.models import llama, qwen2_audio, qwen_audio, wavllm

    specs = [
        ModelSpec("wavllm", "wavllm", "WavLLM (LLaMA-2-7B + Whisper/WavLM front-end, prompt-aware LoRA)",
                  wavllm.WAVLLM_7B, load=wavllm.load),
        ModelSpec("qwen2-audio", "qwen2-audio", "Qwen2-Audio-7B (transformers-native)",
                  qwen2_audio.QWEN2_AUDIO_7B, load=qwen2_audio.load),
        ModelSpec("qwen-audio", "qwen-audio", "Qwen-Audio (v1, converted to the Qwen2 layout)",
                  qwen_audio.QWEN_AUDIO_7B, load=qwen_audio.load),
        ModelSpec("llama", "llama", "a LLaMA-style decoder from a local directory or .gguf (e.g. SmolLM2)",
                  None, load=lambda p: llama.load(p, "llama")),
        ModelSpec("qwen2", "qwen2", "a Qwen2 decoder from a local directory", None,
                  load=lambda p: llama.load(p, "qwen2")),
        ModelSpec("tiny-wavllm", "wavllm", "tiny random WavLLM", None, build_tiny=wavllm.build_tiny),
        ModelSpec("tiny-qwen2-audio", "qwen2-audio", "tiny random Qwen2-Audio", None,
                  build_tiny=qwen2_audio.build_tiny),
        ModelSpec("tiny-qwen-audio", "qwen-audio", "tiny random Qwen-Audio (v1 keys, converted)", None,
                  build_tiny=qwen_audio.build_tiny),
        ModelSpec("tiny-llama", "llama", "tiny random LLaMA decoder (GQA, odd head count)", None,
                  build_tiny=llama.build_tiny),
    ]
    return {s.name: s for s in specs}


def model_names() -> list[str]:
    return list(_specs())


def get_spec(name: str) -> ModelSpec:
    specs = _specs()
    if name not in specs:
        raise UnknownModelError(f"unknown model {name!r}; choose one of: {', '.join(specs)}")
    return specs[name]


def build_model(name: str, path: str | None = None, seed: int = 0):
    """A SpeechLM: tiny presets build offline; released models need a local checkpoint path."""
    spec = get_spec(name)
    if spec.is_preset:
        return spec.build_tiny(seed)
    if path is None:
        presets = [s.name for s in _specs().values() if s.is_preset and s.family == spec.family]
        alternative = f", or use the tiny preset {presets[0]}" if presets else \
            f", or a tiny preset ({', '.join(s.name for s in _specs().values() if s.is_preset)})"
        raise UnknownModelError(
            f"model {name!r} needs its checkpoint: pass --model-path pointing at a local copy "
            f"(nothing is downloaded){alternative}"
        )
    try:
        return spec.load(path)
    except UserError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, RuntimeError) as exc:
        # What the loaders (transformers, torch.load, gguf) raise for a file that is not this model's checkpoint.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"--model-path {path} is not a readable {name} checkpoint ({type(exc).__name__}: "
                              f"{first[:200]}); point it at the model's checkpoint directory or file") from exc


def decoder_args(name: str, path: str | None = None) -> DecoderArgs:
    """Decoder dimensions for planning: built-in for released models, from the preset or checkpoint otherwise."""
    spec = get_spec(name)
    if spec.builtin_args is not None and path is None:
        return spec.builtin_args
    return build_model(name, path).args
