"""H2O: the keep mask and compaction as pure tensor functions (through the runtime: tests/runtime/test_methods.py)."""

import math

import pytest
import torch

from fastadasp.reduction.h2o import h2o_compact, h2o_keep_mask


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def h2o_reference(scores, valid_length, budget, recent_window):
    """One row: kept indices as plain loops."""
    if valid_length <= budget:
        return list(range(valid_length))
    recent = list(range(valid_length - recent_window, valid_length))
    older = sorted(range(valid_length - recent_window), key=lambda j: (-scores[j], j))
    return sorted(older[: budget - recent_window] + recent)


def test_h2o_keeps_recent_window_and_heavy_hitters():
    scores = torch.tensor([[5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 9.0, 0.0, 7.0, 7.0]])
    keep = h2o_keep_mask(scores, valid_length=8, budget=5, recent_window=2)
    # recent: 6, 7; heavy hitters among 0..5: 0 (5.0), 4 (4.0), 2 (3.0); 8, 9 are padding
    assert keep[0].nonzero().flatten().tolist() == [0, 2, 4, 6, 7]


@pytest.mark.parametrize("recent_window", [0, 1, 3, 6])
def test_h2o_matches_loop_reference(recent_window):
    g = seeded(recent_window)
    scores = torch.rand(4, 40, generator=g).round(decimals=1)  # rounding creates ties
    for valid_length in (0, 3, 6, 7, 25, 40):
        keep = h2o_keep_mask(scores, valid_length, 6, recent_window)
        assert keep.shape == scores.shape and keep.dtype == torch.bool
        assert (keep.sum(-1) == min(valid_length, 6)).all()
        assert not keep[:, valid_length:].any()
        for b in range(4):
            expected = h2o_reference(scores[b].tolist(), valid_length, 6, recent_window)
            assert keep[b].nonzero().flatten().tolist() == expected


def test_h2o_invalid_arguments_raise():
    scores = torch.rand(1, 10)
    with pytest.raises(ValueError, match="budget"):
        h2o_keep_mask(scores, 10, 0, 0)
    with pytest.raises(ValueError, match="recent_window"):
        h2o_keep_mask(scores, 10, 4, 5)
    with pytest.raises(ValueError, match="recent_window"):
        h2o_keep_mask(scores, 10, 4, -1)
    with pytest.raises(ValueError, match="valid_length"):
        h2o_keep_mask(scores, 11, 4, 1)


def test_h2o_compact_gathers_kept_entries_in_order():
    g = seeded(0)
    k, v = torch.randn(2, 3, 12, 4, generator=g), torch.randn(2, 3, 12, 5, generator=g)
    scores = torch.rand(2, 12, generator=g)
    keep = h2o_keep_mask(scores, 12, 7, 2)
    k2, v2, s2 = h2o_compact(k, v, scores, keep)
    assert k2.shape == (2, 3, 7, 4) and v2.shape == (2, 3, 7, 5) and s2.shape == (2, 7)
    for b in range(2):
        idx = keep[b].nonzero().flatten()
        assert torch.equal(k2[b], k[b][:, idx]) and torch.equal(v2[b], v[b][:, idx])
        assert torch.equal(s2[b], scores[b, idx])
    uneven = torch.zeros(2, 12, dtype=torch.bool)
    uneven[0, :3], uneven[1, :4] = True, True
    with pytest.raises(ValueError, match="same number"):
        h2o_compact(k, v, scores, uneven)


def test_h2o_low_precision_scores():
    scores = torch.rand(2, 20, generator=seeded(1)).to(torch.bfloat16)
    keep = h2o_keep_mask(scores, 20, 8, 2)
    assert (keep.sum(-1) == 8).all()
    k = torch.randn(2, 2, 20, 4).half()
    k2, v2, s2 = h2o_compact(k, k, scores, keep)
    assert k2.dtype == torch.float16 and s2.dtype == torch.bfloat16 and not math.isnan(float(s2.float().sum()))
