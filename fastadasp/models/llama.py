"""Plain LLaMA / Qwen2 decoders (e.g. a local SmolLM2 directory): audio embeddings come from outside."""

from __future__ import annotations

import torch

from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.decoder import SpeechDecoder
from fastadasp.models.speech_lm import SpeechLM

LLAMA2_7B = DecoderArgs(
    vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
    intermediate_size=11008, max_position_embeddings=4096,
)


class DecoderOnlyLM(SpeechLM):
    """A causal LM whose `model`/`lm_head` are LLaMA- or Qwen2-style."""

    def __init__(self, hf_model, name: str):
        super().__init__(name=name, decoder=SpeechDecoder(hf_model.model, hf_model.lm_head), hf_model=hf_model)


def tiny_llama_config(vocab: int = 256):
    from transformers import LlamaConfig

    # SmolLM2's shape in miniature: GQA with an odd number of heads.
    return LlamaConfig(
        vocab_size=vocab, hidden_size=72, intermediate_size=160, num_hidden_layers=5, num_attention_heads=3,
        num_key_value_heads=1, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True,
    )


def build_tiny(seed: int = 0) -> DecoderOnlyLM:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return DecoderOnlyLM(LlamaForCausalLM(tiny_llama_config()).eval(), name="tiny-llama")


def load(path: str, family: str = "llama") -> DecoderOnlyLM:
    """Load a local Hugging Face directory (config.json + weights) or a .gguf file; never the hub."""
    from transformers import AutoModelForCausalLM

    if str(path).endswith(".gguf"):
        lm = DecoderOnlyLM(load_gguf(path).eval(), name=family)
    else:
        lm = DecoderOnlyLM(AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval(), name=family)
    lm.checkpoint_path = str(path)
    return lm


def load_gguf(path: str):
    """A GGUF file (quantised weights are dequantised) as a transformers causal LM, without the `accelerate`
    package that `from_pretrained(gguf_file=...)` insists on: config and tensors from transformers' own GGUF
    reader, loaded strictly (a tied lm_head is the only key allowed to be absent)."""
    import os

    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if not os.path.exists(path):
        raise FileNotFoundError(f"no GGUF file at {path}")
    directory, name = os.path.split(os.path.abspath(path))
    config = AutoConfig.from_pretrained(directory, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    allowed_missing = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(f"{path}: GGUF tensors do not fit {type(model).__name__}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model
