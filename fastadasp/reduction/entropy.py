"""Transfer-entropy layer selection for the sparse (single-layer) schedule, as pure tensor code.

FastAdaSP scores a candidate merge layer i by TE_i = |H(Φ(F_final)) − H(F_final | Φ(F_i))|. Our reading:
  - H(F_final | Φ(F_i)): entropy of the final-layer audio-span features when the model runs with a single
    reduction at layer i (collected over a calibration set);
  - H(Φ(F_final)): the same entropy when that reduction is applied at the final layer instead, i.e. the
    features the reduction itself produces without any layer downstream to propagate it.
The layer with the smallest TE disturbs the final features least and is selected.

Entropies use a Gaussian approximation with diagonal covariance, H = ½ Σ_d log(2πe σ_d²), because the
features are high-dimensional and calibration sets are small: a full covariance would be rank-deficient.
The model-side callback that produces the features lives in runtime/calibrate.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def gaussian_entropy(features: torch.Tensor, eps: float = 1e-6) -> float:
    """Differential entropy (nats) of a diagonal Gaussian fitted to the samples.

    features: [N, D] with N >= 2 samples. σ_d² is the population variance of feature d (mean squared
    deviation, divisor N), floored at eps so constant features give a finite value. Accumulated in float64.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"gaussian_entropy needs N >= 2 samples for a variance, got {features.shape[0]}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    var = features.double().var(dim=0, correction=0).clamp_min(eps)
    return float(0.5 * (features.shape[1] * _LOG_2PI_E + var.log().sum()))


def transfer_entropy_scores(
    final_features: torch.Tensor, features_by_layer: dict[int, torch.Tensor]
) -> dict[int, float]:
    """TE_i = |H(final_features) − H(features_by_layer[i])| for every layer i.

    final_features: [N, D] (reduction at the final layer); features_by_layer: layer -> [N_i, D].
    """
    dim = final_features.shape[-1]
    for layer, feats in features_by_layer.items():
        if feats.dim() != 2 or feats.shape[1] != dim:
            shape = tuple(feats.shape)
            raise ValueError(f"layer {layer} features must be [N, {dim}] like the final ones, got {shape}")
    reference = gaussian_entropy(final_features)
    return {layer: abs(reference - gaussian_entropy(feats)) for layer, feats in features_by_layer.items()}


@dataclass(frozen=True)
class TransferEntropyResult:
    """scores: layer -> TE; selected_layer: argmin TE (ties: lower layer); reference_entropy: H(final)."""

    scores: dict[int, float]
    selected_layer: int
    reference_entropy: float

    def to_dict(self) -> dict:
        return {
            "scores": {int(layer): float(te) for layer, te in sorted(self.scores.items())},
            "selected_layer": int(self.selected_layer),
            "reference_entropy": float(self.reference_entropy),
        }


def select_layer_by_transfer_entropy(
    collect_features: Callable[[int], torch.Tensor], candidate_layers: Sequence[int], final_layer: int
) -> TransferEntropyResult:
    """Pick the candidate layer whose single-layer reduction gives the smallest transfer entropy.

    collect_features(layer) runs the model with the single-layer reduction at `layer` over a calibration set
    and returns the final-layer audio-span features stacked over tokens and samples, [N, D]. It is called
    once for final_layer (the reference) and once per distinct candidate; a candidate equal to final_layer
    reuses the reference features (TE 0). Ties go to the lower layer.
    """
    candidates = list(dict.fromkeys(int(layer) for layer in candidate_layers))
    if not candidates:
        raise ValueError("select_layer_by_transfer_entropy needs at least one candidate layer")
    final_features = collect_features(final_layer)
    features = {
        layer: final_features if layer == final_layer else collect_features(layer) for layer in candidates
    }
    scores = transfer_entropy_scores(final_features, features)
    selected = min(scores, key=lambda layer: (scores[layer], layer))
    return TransferEntropyResult(scores, selected, gaussian_entropy(final_features))


__all__ = [
    "TransferEntropyResult",
    "gaussian_entropy",
    "select_layer_by_transfer_entropy",
    "transfer_entropy_scores",
]
