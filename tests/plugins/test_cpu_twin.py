"""The CPU twin of the CUDA kernels (same per-element functions, the kernels' index order) against the PyTorch
reference fastadasp.reduction.weighted_merge_span: identical groups and source indices, values within the
per-dtype tolerances of plugins/weighted_merge/supported.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastadasp.plugins import merged_length
from fastadasp.reduction.merge import (
    RATIO_DENOMINATOR,
    adjacent_key_similarity,
    num_merged,
    ratio_numerator,
    weighted_merge_span,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16}


def edge_margin(keys: torch.Tensor, m: int) -> float:
    """Smallest gap (over the batch) between the m-th and (m+1)-th largest reference similarity: below a rounding-
    noise threshold either edge may legitimately win (the twin sums in another order than PyTorch)."""
    sims = adjacent_key_similarity(keys).double()
    if not 0 < m < sims.shape[1]:
        return float("inf")
    ranked = sims.sort(dim=-1, descending=True).values
    return float((ranked[:, m - 1] - ranked[:, m]).min())


def ulp_distance(a: torch.Tensor, b: torch.Tensor, above: float) -> int:
    """Largest distance in units of the last place between two fp16/bf16 tensors, over the elements whose
    magnitude is at least `above` (near zero, cancellation in the fp32 sums dominates the rounding)."""
    ia = a.contiguous().view(_BITS[a.dtype]).to(torch.int32) & 0x7FFF
    ib = b.contiguous().view(_BITS[b.dtype]).to(torch.int32) & 0x7FFF
    mask = ((a.float() * b.float()) >= 0) & (b.float().abs() >= above)
    return int(((ia - ib).abs() * mask).max()) if a.numel() else 0


def check_against_reference(cpu_twin, supported, x, keys, received, q):
    n = x.shape[1]
    m = merged_length(n, q)
    assert m == num_merged(n, q / RATIO_DENOMINATOR)  # the package's own length rule
    ref = weighted_merge_span(x, keys, received, m)
    merged, source = cpu_twin.merge(x, keys, received, q)
    assert merged.dtype == x.dtype and merged.shape == ref.tokens.shape == (x.shape[0], n - m, x.shape[2])
    assert source.tolist() == ref.source_index.tolist()
    kind = {v: k for k, v in DTYPES.items()}[x.dtype]
    tol = supported["tolerances"][kind]
    torch.testing.assert_close(merged.float(), ref.tokens.float(), rtol=tol["rtol"], atol=tol["atol"])
    if tol["max_ulp"] is not None:
        assert ulp_distance(merged, ref.tokens, supported["tolerances"]["ulp_check_above"]) <= tol["max_ulp"]
    return merged, source


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    batch=st.integers(1, 3),
    n=st.one_of(st.integers(1, 48), st.integers(1, 8192), st.sampled_from([4095, 4096, 4097, 8192])),
    dim=st.integers(1, 12),
    key_dim=st.one_of(st.integers(1, 12), st.sampled_from([8, 16, 32, 64])),
    ratio=st.one_of(st.floats(0.0, 0.999), st.sampled_from([0.0, 0.3, 0.5, 0.999])),
    dtype=st.sampled_from(list(DTYPES)),
    seed=st.integers(0, 2**31 - 1),
)
def test_twin_matches_pytorch_reference(cpu_twin, supported, batch, n, dim, key_dim, ratio, dtype, seed):
    if n * (dim + key_dim) * batch > 400_000:  # keep one example under a few hundred milliseconds
        n = max(1, 400_000 // ((dim + key_dim) * batch))
    g = torch.Generator().manual_seed(seed)
    t = DTYPES[dtype]
    x = torch.randn(batch, n, dim, generator=g).to(t)
    keys = torch.randn(batch, n, key_dim, generator=g).to(t)
    received = torch.rand(batch, n, generator=g) + 0.05
    q = ratio_numerator(ratio)
    m = merged_length(n, q)
    assume(edge_margin(keys, m) > supported["tolerances"]["min_edge_margin"])
    check_against_reference(cpu_twin, supported, x, keys, received, q)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n,ratio", [(3000, 0.5), (8192, 0.3), (4097, 0.9)])
def test_long_spans_in_every_dtype(cpu_twin, supported, dtype, n, ratio):
    """Audio-length spans (WavLLM's 3000 tokens; past the 4096-token block-select limit of the kernels)."""
    t = DTYPES[dtype]
    q = ratio_numerator(ratio)
    for seed in range(n, n + 20):  # the first seed without a near-tie at the m-th edge (margin control)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, n, 16, generator=g).to(t)
        keys = torch.randn(1, n, 32, generator=g).to(t)
        if edge_margin(keys, merged_length(n, q)) > supported["tolerances"]["min_edge_margin"]:
            break
    else:
        pytest.fail("20 seeds in a row had a near-tie at the m-th edge")
    received = torch.rand(1, n, generator=g) + 0.05
    merged, _ = check_against_reference(cpu_twin, supported, x, keys, received, q)
    assert merged.shape[1] == n - merged_length(n, q)


def test_similarity_is_the_reference_cosine(cpu_twin):
    g = torch.Generator().manual_seed(5)
    keys = torch.randn(3, 257, 40, generator=g)
    keys[1, 7] = 0.0  # a zero-norm key has similarity 0 with both neighbours
    sims = cpu_twin.similarity(keys)
    np.testing.assert_allclose(sims, adjacent_key_similarity(keys).numpy(), rtol=0, atol=1e-6)
    assert sims[1, 6] == 0.0 and sims[1, 7] == 0.0


def test_ties_break_towards_lower_index_and_chain(cpu_twin):
    keys = torch.ones(1, 6, 4)  # every adjacent similarity is exactly 1
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    q = RATIO_DENOMINATOR // 2  # m = 3 of 6
    merged, source = cpu_twin.merge(x, keys, torch.ones(1, 6), q)
    assert source.tolist() == [[0, 4, 5]]  # edges 0, 1, 2 picked -> tokens 0..3 are one group
    assert merged.flatten().tolist() == [1.5, 4.0, 5.0]


def test_weights_pull_the_mean_and_zero_weight_groups_stay_finite(cpu_twin):
    x = torch.tensor([[[0.0], [10.0], [50.0], [7.0], [9.0]]])
    keys = torch.tensor([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, 0.0], [-1.0, 0.0]]])
    received = torch.tensor([[1.0, 3.0, 1.0, 0.0, 0.0]])
    q = (2 * RATIO_DENOMINATOR + 4) // 5  # m = 2 of 5: edges 3 (sim 1) and 0 (sim ~1)
    merged, source = cpu_twin.merge(x, keys, received, q)
    assert source.tolist() == [[0, 2, 3]]
    assert merged.flatten().tolist() == [7.5, 50.0, 0.0]  # (0*1 + 10*3) / 4; an all-zero-weight group -> 0


def test_no_merge_passes_the_span_through_bitwise(cpu_twin):
    g = torch.Generator().manual_seed(2)
    for t in DTYPES.values():
        x = torch.randn(2, 9, 5, generator=g).to(t)
        merged, source = cpu_twin.merge(x, torch.randn(2, 9, 3, generator=g).to(t), torch.rand(2, 9, generator=g), 0)
        assert torch.equal(merged, x) and source.tolist() == [list(range(9))] * 2


def test_batch_rows_are_independent_and_deterministic(cpu_twin):
    g = torch.Generator().manual_seed(11)
    x, keys, w = torch.randn(4, 70, 8, generator=g), torch.randn(4, 70, 24, generator=g), torch.rand(4, 70, generator=g)
    q = ratio_numerator(0.45)
    merged, source = cpu_twin.merge(x, keys, w, q)
    again, _ = cpu_twin.merge(x, keys, w, q)
    assert torch.equal(merged, again)
    for b in range(4):
        row, row_source = cpu_twin.merge(x[b:b + 1], keys[b:b + 1], w[b:b + 1], q)
        assert torch.equal(row, merged[b:b + 1]) and torch.equal(row_source, source[b:b + 1])


def test_single_token_and_unaligned_keys(cpu_twin, supported):
    """n = 1 keeps its token at any ratio; keys whose rows are not 16-byte multiples take the scalar-load path."""
    merged, source = cpu_twin.merge(torch.ones(2, 1, 3), torch.ones(2, 1, 2), torch.ones(2, 1), 65535)
    assert merged.shape == (2, 1, 3) and source.tolist() == [[0], [0]]
    g = torch.Generator().manual_seed(4)
    x, keys = torch.randn(1, 50, 7, generator=g), torch.randn(1, 50, 5, generator=g).half()
    check_against_reference(cpu_twin, supported, x.half(), keys, torch.rand(1, 50, generator=g) + 0.1,
                            ratio_numerator(0.4))


@pytest.mark.parametrize("kind,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_dtype_conversions_round_like_pytorch(cpu_twin, kind, torch_dtype):
    """The shared header's fp32 -> 16-bit rounding (nearest even) and 16-bit -> fp32 widening, bit for bit."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=400_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-45,
                        3.4e38, np.inf, -np.inf], dtype=np.float32)
    values = np.concatenate([bits.view(np.float32), special])
    values = values[~np.isnan(values)]  # NaN payloads are implementation-defined; both stay NaN (checked below)
    expected = torch.from_numpy(values).to(torch_dtype).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(cpu_twin.from_float(values, kind), expected)
    assert np.isnan(cpu_twin.to_float(cpu_twin.from_float(np.array([np.nan], np.float32), kind), kind)).all()
    every = np.arange(2**16, dtype=np.uint16)
    widened = torch.from_numpy(every.view(np.int16)).view(torch_dtype).float().numpy()
    ours = cpu_twin.to_float(every, kind)
    finite = ~np.isnan(widened)
    np.testing.assert_array_equal(ours[finite].view(np.uint32), widened[finite].view(np.uint32))
    assert np.isnan(ours[~finite]).all()


def test_length_rule_matches_reduction_package(cpu_twin):
    for q in (0, 1, 6553, 19661, 32768, 45000, 65535):
        for n in list(range(0, 200)) + [1499, 1500, 3000, 4096, 4097, 8192]:
            want = min(n * q // RATIO_DENOMINATOR, max(n - 1, 0))
            assert cpu_twin.num_merged(n, q) == merged_length(n, q) == want
            if n:
                assert want == num_merged(n, q / RATIO_DENOMINATOR)


def test_bad_arguments_are_errors_not_crashes(cpu_twin):
    x = torch.randn(1, 4, 2)
    with pytest.raises(RuntimeError, match="ratio_numerator"):
        cpu_twin.merge(x, x, torch.ones(1, 4), 65536)
    with pytest.raises(TypeError, match="keys must have x's type"):
        cpu_twin.merge(x, x.half(), torch.ones(1, 4), 10)
