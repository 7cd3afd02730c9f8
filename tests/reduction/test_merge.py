"""weighted_merge against a straightforward loop implementation of the FastAdaSP reference semantics."""

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastadasp.reduction import num_merged, weighted_merge, weighted_merge_span
from fastadasp.reduction.merge import adjacent_key_similarity, ratio_numerator, attention_received, chain_group_index


def loop_reference(x, keys, weights, m):
    """One sample, float64, plain Python loops: the method exactly as fastadasp/reduction/merge.py states it."""
    n = x.shape[0]
    x, keys = x.double(), keys.double()
    w = [1.0] * n if weights is None else [float(v) for v in weights.double()]
    sims = []
    for i in range(n - 1):
        a, b = keys[i], keys[i + 1]
        sims.append(float(a @ b) / max(math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)), 1e-12))
    order = sorted(range(n - 1), key=lambda i: (-sims[i], i))
    picked = set(order[:m])
    groups, current = [], [0]
    for j in range(1, n):
        if (j - 1) in picked:
            current.append(j)
        else:
            groups.append(current)
            current = [j]
    groups.append(current)
    out = torch.stack([sum(w[j] * x[j] for j in g) / sum(w[j] for j in g) for g in groups])
    margin = math.inf
    if 0 < m < n - 1:
        ranked = sorted(sims, reverse=True)
        margin = ranked[m - 1] - ranked[m]
    return out, [g[0] for g in groups], margin


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 3),
    n=st.integers(1, 40),
    dim=st.integers(1, 9),
    key_dim=st.integers(1, 9),
    ratio=st.floats(0.0, 0.99),
    use_weights=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_loop_reference_fp32(batch, n, dim, key_dim, ratio, use_weights, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, dim, generator=g)
    keys = torch.randn(batch, n, key_dim, generator=g)
    weights = torch.rand(batch, n, generator=g) + 0.05 if use_weights else None
    m = num_merged(n, ratio)
    out = weighted_merge_span(x, keys, weights, m)
    assert out.tokens.shape == (batch, n - m, dim)
    for b in range(batch):
        ref, firsts, margin = loop_reference(x[b], keys[b], None if weights is None else weights[b], m)
        assume(margin > 1e-5)  # a near-tie at the m-th edge may legitimately flip between fp32 and fp64
        torch.testing.assert_close(out.tokens[b].double(), ref, rtol=1e-5, atol=1e-5)
        assert out.source_index[b].tolist() == firsts


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_low_precision_matches_reference_on_rounded_inputs(dtype, tol):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 64, 16, generator=g).to(dtype)
    keys = torch.randn(4, 64, 24, generator=g).to(dtype)
    weights = (torch.rand(4, 64, generator=g) + 0.1).to(dtype)
    m = num_merged(64, 0.4)
    out = weighted_merge_span(x, keys, weights, m)
    assert out.tokens.dtype == dtype
    agree = 0
    for b in range(4):
        ref, firsts, _ = loop_reference(x[b].float(), keys[b].float(), weights[b].float(), m)
        if out.source_index[b].tolist() == firsts:
            agree += 1
            torch.testing.assert_close(out.tokens[b].double(), ref, rtol=tol, atol=tol)
    # Similarities are computed in fp32 from the rounded keys, exactly like the reference here.
    assert agree == 4


def test_batch_equals_per_sample():
    g = torch.Generator().manual_seed(1)
    x, keys, w = torch.randn(5, 33, 8, generator=g), torch.randn(5, 33, 6, generator=g), torch.rand(5, 33, generator=g)
    batched = weighted_merge(x, keys, w, 12)
    for b in range(5):
        torch.testing.assert_close(batched[b : b + 1], weighted_merge(x[b : b + 1], keys[b : b + 1], w[b : b + 1], 12))


def test_ties_break_towards_lower_index_and_chain():
    keys = torch.ones(1, 6, 4)  # every adjacent similarity is exactly 1
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    out = weighted_merge_span(x, keys, None, 3)
    # edges 0, 1, 2 picked -> tokens 0..3 chain into one group
    assert out.source_index.tolist() == [[0, 4, 5]]
    torch.testing.assert_close(out.tokens.flatten(), torch.tensor([1.5, 4.0, 5.0]))


def test_weights_pull_the_average():
    x = torch.tensor([[[0.0], [10.0], [50.0]]])
    keys = torch.tensor([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]])  # edge 0 is the most similar
    out = weighted_merge(x, keys, torch.tensor([[1.0, 3.0, 1.0]]), 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([7.5, 50.0]))


def test_zero_norm_keys_do_not_produce_nan():
    keys = torch.zeros(1, 5, 3)
    out = weighted_merge(torch.randn(1, 5, 2), keys, None, 2)
    assert torch.isfinite(out).all()


def test_num_merged_rule():
    assert num_merged(100, 0.29) == 29  # binary rounding of 0.29 * 100 must not lose a token
    assert num_merged(10, 0.999) == 9
    assert num_merged(1, 0.9) == 0
    assert num_merged(375, 0.0) == 0
    assert num_merged(7, 0.5) == 3
    assert num_merged(10, 0.3) == 3 and num_merged(3000, 0.5) == 1500
    for n in range(1, 600):  # the integer rule equals floor(n * q / 2**16) computed exactly
        q = ratio_numerator(0.37)
        assert num_merged(n, 0.37) == min(n * q // 65536, max(n - 1, 0))


def test_invalid_num_merge_raises():
    with pytest.raises(ValueError, match="num_merge"):
        weighted_merge(torch.randn(1, 4, 2), torch.randn(1, 4, 2), None, 4)
    with pytest.raises(ValueError, match="weights"):
        weighted_merge(torch.randn(1, 4, 2), torch.randn(1, 4, 2), torch.ones(1, 3), 1)


def test_chain_group_index_and_received_attention():
    picked = torch.tensor([[True, True, False, True]])
    assert chain_group_index(picked).tolist() == [[0, 0, 0, 1, 1]]
    probs = torch.softmax(torch.randn(2, 3, 7, 7), dim=-1)
    rec = attention_received(probs, 2, 4)
    torch.testing.assert_close(rec, probs[..., 2:6].sum(dim=(1, 2)))
    sims = adjacent_key_similarity(torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, -1.0]]]))
    torch.testing.assert_close(sims, torch.tensor([[0.0, -1.0]]))
