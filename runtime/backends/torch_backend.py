"""The PyTorch reference backend: the exported graphs and engines are checked against this one."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastadasp.models.decoder import SpeechDecoder
from fastadasp.reduction.baselines import SpanReducer, weighted_merge_reducer
from fastadasp.reduction.schedule import Schedule, span_lengths_for_ratios
from fastadasp.runtime.backends.base import PrefillResult
from fastadasp.runtime.kv_cache import CompactedKVCache
from fastadasp.runtime.reference import decode_one_token, prefill, prefill_lengths
from fastadasp.core.prompt import PromptInputs


class TorchBackend:
    """Prefill with a fixed schedule, then decode, over a SpeechDecoder and a CompactedKVCache."""

    def __init__(
        self,
        decoder: SpeechDecoder,
        ratios: Sequence[float] | Schedule | None = None,
        *,
        position_policy: str = "reference",
        reducer: SpanReducer = weighted_merge_reducer,
        generator: torch.Generator | None = None,
        kv_policy=None,
    ):
        self.decoder = decoder
        if ratios is None:
            ratios = [0.0] * decoder.args.num_layers
        self.ratios = list(ratios.ratios if isinstance(ratios, Schedule) else ratios)
        self.position_policy = position_policy
        self.reducer = reducer
        self.generator = generator
        self.kv_policy = kv_policy  # e.g. reduction.h2o.H2OPolicy: decode-time KV eviction
        self.cache: CompactedKVCache | None = None
        self.lora_scale: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    @torch.no_grad()
    def prefill(self, inputs: PromptInputs, max_new_tokens: int) -> PrefillResult:
        embeds = inputs.embeds(self.decoder.embed, self.dtype)
        schedule_spans = span_lengths_for_ratios(self.ratios, inputs.audio_length)
        args = self.decoder.args
        self.cache = CompactedKVCache(
            prefill_lengths(inputs.text_length, schedule_spans),
            embeds.shape[0],
            args.num_kv_heads,
            args.head_dim,
            max_new_tokens,
            dtype=self.dtype,
            device=embeds.device,
        )
        self.lora_scale = inputs.lora_scale
        return prefill(
            self.decoder,
            embeds,
            inputs.audio_start,
            inputs.audio_length,
            self.ratios,
            self.cache,
            lora_scale=inputs.lora_scale,
            position_policy=self.position_policy,
            reducer=self.reducer,
            generator=self.generator,
            kv_policy=self.kv_policy,
        )

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return decode_one_token(
            self.decoder, input_ids, position_ids, self.cache, lora_scale=self.lora_scale, kv_policy=self.kv_policy
        )

    def reorder(self, batch_index: torch.Tensor) -> None:
        self.cache.reorder(batch_index)
        if self.kv_policy is not None:
            self.kv_policy.reorder(batch_index)
        if self.lora_scale is not None:
            self.lora_scale = self.lora_scale.index_select(0, batch_index)

    def expand(self, repeats: int) -> None:
        self.reorder(self.cache.expansion_index(repeats))
