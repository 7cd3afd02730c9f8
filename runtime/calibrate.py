"""Model-side calibration: transfer-entropy layer selection for the sparse (single-layer) schedule.

For each candidate layer i the decoder runs with the single-layer reduction at i over a calibration set and
the final-layer audio-span features are stacked; the reference is the same reduction applied at the final
layer. `fastadasp.reduction.entropy` turns the features into TE scores (pure tensor code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastadasp.runtime.reference import prefill, prefill_lengths
from fastadasp.reduction.entropy import TransferEntropyResult, select_layer_by_transfer_entropy
from fastadasp.reduction.schedule import make_schedule, span_lengths_for_ratios
from fastadasp.runtime.kv_cache import CompactedKVCache
from fastadasp.core.prompt import PromptInputs


@torch.no_grad()
def final_audio_features(lm, inputs: PromptInputs, layer: int, ratio: float, position_policy: str = "reference") -> torch.Tensor:
    """Final-layer audio-span hidden states [B * n_final, D] with a single-layer reduction at `layer`."""
    args = lm.args
    ratios = make_schedule("sparse", args.num_layers, layer, ratio).ratios
    dtype = next(lm.decoder.parameters()).dtype
    embeds = inputs.embeds(lm.decoder.embed, dtype)
    spans = span_lengths_for_ratios(ratios, inputs.audio_length)
    cache = CompactedKVCache(prefill_lengths(inputs.text_length, spans), inputs.batch_size, args.num_kv_heads,
                             args.head_dim, 0, dtype=dtype)
    result = prefill(lm.decoder, embeds, inputs.audio_start, inputs.audio_length, ratios, cache,
                     lora_scale=inputs.lora_scale, position_policy=position_policy, keep_final_audio=True)
    return result.final_audio_hidden.reshape(-1, args.hidden_size).float()


def select_sparse_layer(
    lm, calibration: Sequence[PromptInputs], ratio: float, candidate_layers: Sequence[int] | None = None
) -> TransferEntropyResult:
    """Pick the sparse-schedule layer whose reduction disturbs the final audio features least (smallest TE)."""
    if not calibration:
        raise ValueError("transfer-entropy selection needs at least one calibration input")
    final_layer = lm.args.num_layers - 1
    candidates = list(candidate_layers) if candidate_layers is not None else list(range(final_layer))

    def collect(layer: int) -> torch.Tensor:
        return torch.cat([final_audio_features(lm, x, layer, ratio) for x in calibration], dim=0)

    return select_layer_by_transfer_entropy(collect, candidates, final_layer)
