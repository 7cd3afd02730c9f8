"""Test helpers shared across the suite (importable as `support`; fixtures live in conftest.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from fastadasp.reduction.merge import adjacent_key_similarity, weighted_merge_span

TINY_PRESETS = ["tiny-qwen2-audio", "tiny-llama", "tiny-wavllm", "tiny-qwen-audio"]


class _LoRALinear(nn.Module):
    """Reference WavLLM projection for Hugging Face runs: base(x) + (x A^T B^T) * s."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.base, self.a, self.b, self.scale = base, a, b, scale

    def forward(self, x):
        return self.base(x) + (x @ self.a.T @ self.b.T) * self.scale.unsqueeze(1)


@dataclass
class HFReference:
    """Runs the Hugging Face model on the same request our PromptInputs describes."""

    model: nn.Module
    kwargs: dict  # input_ids+features or inputs_embeds (+attention_mask)

    @torch.no_grad()
    def last_logits(self) -> torch.Tensor:
        return self.model(**self.kwargs).logits[:, -1].float()

    @torch.no_grad()
    def generate(self, **gen) -> torch.Tensor:
        out = self.model.generate(**self.kwargs, do_sample=False, **gen)
        if "input_ids" in self.kwargs:
            out = out[:, self.kwargs["input_ids"].shape[1] :]
        return out


def hf_reference(lm, inputs, *, features=None) -> HFReference:
    """The Hugging Face model + inputs equivalent to `inputs` for any tiny preset."""
    if lm.family == "qwen2-audio" and features is not None:
        ids = lm.hf_input_ids(inputs.prefix_ids, inputs.audio_length, inputs.suffix_ids)
        mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long)
        return HFReference(lm.hf_model, {"input_ids": ids, "input_features": features, "feature_attention_mask": mask})
    model = lm.hf_model
    if lm.needs_lora_scale:
        model = copy.deepcopy(lm.hf_model)
        lora = lm.decoder.lora
        for i, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            for p, name in zip("qkvo", ("q_proj", "k_proj", "v_proj", "o_proj")):
                base = getattr(attn, name)
                scale = lora.scale_for(p, inputs.lora_scale)  # q/k channels in the HF rotary order
                setattr(attn, name, _LoRALinear(base, lora.lora_a[f"{i}_{p}"], lora.lora_b[f"{i}_{p}"], scale))
    embed = lm.decoder.embed
    embeds = torch.cat([embed(inputs.prefix_ids), inputs.audio_embeds, embed(inputs.suffix_ids)], dim=1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    return HFReference(model, {"inputs_embeds": embeds, "attention_mask": mask})


class MarginRecorder:
    """A span reducer that runs the weighted merge and records the similarity gap at the m-th edge, so parity
    tests can tell a real mismatch from a legitimate near-tie flip (docs/architecture.md, "The WeightedMerge node")."""

    def __init__(self):
        self.min_margin = float("inf")

    def __call__(self, x, keys, received, num_remove, **_):
        sims = adjacent_key_similarity(keys).double()
        if 0 < num_remove < sims.shape[1]:
            ranked = sims.sort(dim=-1, descending=True).values
            self.min_margin = min(self.min_margin, float((ranked[:, num_remove - 1] - ranked[:, num_remove]).min()))
        return weighted_merge_span(x, keys, received, num_remove)
