"""Gaussian entropy and transfer-entropy layer selection."""

import json
import math

import pytest
import torch

from fastadasp.reduction.entropy import (
    TransferEntropyResult,
    gaussian_entropy,
    select_layer_by_transfer_entropy,
    transfer_entropy_scores,
)

LOG_2PI_E = math.log(2 * math.pi * math.e)


def closed_form(sigmas):
    return 0.5 * sum(math.log(2 * math.pi * math.e * s * s) for s in sigmas)


def test_matches_closed_form_for_known_diagonal_gaussian():
    sigmas = [0.5, 1.0, 2.0, 3.0]
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(20000, 4, generator=g) * torch.tensor(sigmas) + torch.tensor([5.0, -1.0, 0.0, 2.0])
    # the log-variance estimate has std ~ sqrt(2/N) per feature, so the sum is good to ~0.01
    assert gaussian_entropy(samples) == pytest.approx(closed_form(sigmas), abs=0.05)


def test_hand_computed_tiny_cases():
    # column 0: values 1, 3, 5 -> mean 3, population variance (4 + 0 + 4) / 3
    expected = 0.5 * math.log(2 * math.pi * math.e * 8 / 3)
    assert gaussian_entropy(torch.tensor([[1.0], [3.0], [5.0]])) == pytest.approx(expected)
    # column 1 is constant: its variance is floored at eps
    feats = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    expected = 0.5 * (LOG_2PI_E + math.log(1.0)) + 0.5 * (LOG_2PI_E + math.log(1e-6))
    assert gaussian_entropy(feats) == pytest.approx(expected)
    assert gaussian_entropy(feats, eps=1e-2) == pytest.approx(0.5 * (2 * LOG_2PI_E + math.log(1e-2)))


def test_entropy_is_shift_invariant_and_scales_with_log_sigma():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(100, 6, generator=g)
    h = gaussian_entropy(feats)
    assert gaussian_entropy(feats + 7.0) == pytest.approx(h, abs=1e-5)
    assert gaussian_entropy(feats * 2.0) == pytest.approx(h + 6 * math.log(2.0), abs=1e-5)


def test_low_precision_features():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(256, 8, generator=g)
    h = gaussian_entropy(feats)
    for dtype in (torch.float16, torch.bfloat16):
        value = gaussian_entropy(feats.to(dtype))
        assert isinstance(value, float)
        assert value == pytest.approx(h, abs=0.05)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_entropy(torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        gaussian_entropy(torch.randn(5))
    with pytest.raises(ValueError, match="eps"):
        gaussian_entropy(torch.randn(5, 2), eps=0.0)
    with pytest.raises(ValueError, match="layer 3"):
        transfer_entropy_scores(torch.randn(5, 2), {3: torch.randn(5, 3)})


def test_transfer_entropy_scores_are_absolute_entropy_differences():
    g = torch.Generator().manual_seed(3)
    final = torch.randn(500, 4, generator=g)
    by_layer = {0: final * 3.0, 1: final * 0.5, 2: final.clone()}
    scores = transfer_entropy_scores(final, by_layer)
    assert set(scores) == {0, 1, 2}
    assert scores[0] == pytest.approx(4 * math.log(3.0), abs=1e-5)
    assert scores[1] == pytest.approx(4 * math.log(2.0), abs=1e-5)  # |log 0.5|, not negative
    assert scores[2] == pytest.approx(0.0, abs=1e-12)


class FakeCollector:
    """Stands in for "run the model with a single-layer reduction at `layer`": features of a chosen scale."""

    def __init__(self, scales, seed=0):
        self.scales = scales
        self.calls = []
        g = torch.Generator().manual_seed(seed)
        self.base = {layer: torch.randn(400, 5, generator=g) for layer in scales}

    def __call__(self, layer):
        self.calls.append(layer)
        return self.base[layer] * self.scales[layer]


def test_selects_layer_with_entropy_closest_to_final():
    collect = FakeCollector({31: 1.0, 2: 3.0, 5: 1.15, 9: 0.6, 14: 0.8})
    result = select_layer_by_transfer_entropy(collect, [2, 5, 9, 14], final_layer=31)
    assert isinstance(result, TransferEntropyResult)
    assert result.selected_layer == 5
    assert collect.calls.count(31) == 1 and sorted(collect.calls) == [2, 5, 9, 14, 31]
    reference = gaussian_entropy(collect(31))
    assert result.reference_entropy == pytest.approx(reference)
    for layer in (2, 5, 9, 14):
        assert result.scores[layer] == pytest.approx(abs(reference - gaussian_entropy(collect(layer))))
    assert result.selected_layer == min(result.scores, key=result.scores.get)


def test_random_fake_callbacks_pick_the_argmin():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        scales = {10: 1.0, **{layer: float(torch.rand(1, generator=g)) * 2 + 0.2 for layer in range(10)}}
        collect = FakeCollector(scales, seed=seed)
        result = select_layer_by_transfer_entropy(collect, list(range(10)), final_layer=10)
        h_final = gaussian_entropy(collect(10))
        distances = {layer: abs(gaussian_entropy(collect(layer)) - h_final) for layer in range(10)}
        assert result.selected_layer == min(distances, key=lambda layer: (distances[layer], layer))


def test_ties_go_to_lower_layer_and_to_dict():
    g = torch.Generator().manual_seed(4)
    shared, final = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    features = {7: final, 1: shared, 4: shared, 6: shared * 9}

    result = select_layer_by_transfer_entropy(lambda layer: features[layer], [6, 4, 1], final_layer=7)
    assert result.scores[1] == result.scores[4]
    assert result.selected_layer == 1
    d = result.to_dict()
    assert d["selected_layer"] == 1 and list(d["scores"]) == [1, 4, 6]
    assert d["reference_entropy"] == pytest.approx(gaussian_entropy(final))
    assert json.loads(json.dumps(d))["scores"]["4"] == pytest.approx(result.scores[4])


def test_empty_candidates_raise_and_final_layer_candidate_reuses_reference():
    with pytest.raises(ValueError, match="candidate"):
        select_layer_by_transfer_entropy(lambda layer: torch.randn(4, 2), [], final_layer=3)
    calls = []

    def collect(layer):
        calls.append(layer)
        return torch.randn(30, 2, generator=torch.Generator().manual_seed(layer)) * (1 + layer)

    result = select_layer_by_transfer_entropy(collect, [0, 3, 0], final_layer=3)
    assert calls == [3, 0]
    assert result.scores[3] == 0.0 and result.selected_layer == 3
