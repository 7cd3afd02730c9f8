"""Span-reduction baselines and H2O against plain-loop references of the rules their docstrings state."""

import pytest
import torch

from fastadasp.reduction.baselines import (
    SPAN_REDUCERS,
    atome_merge,
    atome_select_pairs,
    average_merge,
    fastv_evict,
    random_evict,
    random_merge,
    weighted_merge_reducer,
)
from fastadasp.reduction.merge import adjacent_key_similarity, weighted_merge_span

MERGES = ["weighted", "average", "random_merge", "atome"]
EVICTIONS = ["random_evict", "fastv"]
DETERMINISTIC = ["weighted", "average", "atome", "fastv"]



def make_inputs(seed, batch=3, n=24, dim=8, key_dim=6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, dim, generator=g)
    keys = torch.randn(batch, n, key_dim, generator=g)
    received = torch.rand(batch, n, generator=g) + 0.05
    return x.to(dtype), keys.to(dtype), received.to(dtype)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def groups_from_starts(starts, n):
    """Contiguous groups [s_g, s_{g+1}) implied by ascending first-member indices."""
    bounds = list(starts) + [n]
    return [list(range(bounds[g], bounds[g + 1])) for g in range(len(starts))]


def loop_group_average(x, groups, weights=None):
    """One sample, float64: the (weighted) mean of every group, written as plain loops."""
    rows = []
    for group in groups:
        w = [1.0 if weights is None else float(weights[j]) for j in group]
        rows.append(sum(w[i] * x[j].double() for i, j in enumerate(group)) / sum(w))
    return torch.stack(rows)


def greedy_pairs_reference(sims, limit):
    """Sequential greedy: visit edges by descending similarity (ties: lower index), take disjoint ones."""
    used, taken = set(), []
    for e in sorted(range(len(sims)), key=lambda i: (-sims[i], i)):
        if len(taken) == limit:
            break
        if e in used or e + 1 in used:
            continue
        taken.append(e)
        used |= {e, e + 1}
    return sorted(taken)


def atome_reference(sims, m):
    """The full documented A-ToMe rule as plain loops: greedy, then augmenting shifts while pairs are missing."""
    picked = set(greedy_pairs_reference(sims, m))
    n = len(sims) + 1
    while len(picked) < m:
        paired = {t for e in picked for t in (e, e + 1)}
        unpaired = [t for t in range(n) if t not in paired]
        segments = [(unpaired[j], unpaired[j + 1]) for j in range(len(unpaired) - 1)]
        gains = [sum(sims[e] * (-1.0 if e in picked else 1.0) for e in range(u, v)) for u, v in segments]
        chosen = greedy_pairs_reference(gains, m - len(picked))  # consecutive segments share a token
        for j in chosen:
            u, v = segments[j]
            picked ^= set(range(u, v))
    return sorted(picked)


def picked_edges_from_starts(starts, n):
    """Edges joined inside the contiguous groups given by their first members."""
    return [e for group in groups_from_starts(starts, n) for e in group[:-1]]


# ---------------------------------------------------------------------------------------------------------
# shared contract


def test_registry_names():
    assert set(SPAN_REDUCERS) == {"weighted", "average", "random_merge", "random_evict", "atome", "fastv"}
    assert SPAN_REDUCERS["weighted"] is weighted_merge_reducer
    assert SPAN_REDUCERS["atome"] is atome_merge


@pytest.mark.parametrize("name", sorted(SPAN_REDUCERS))
@pytest.mark.parametrize("num_remove", [0, 1, 7, 12])
def test_shapes_and_ascending_source_index(name, num_remove):
    x, keys, received = make_inputs(0)
    out = SPAN_REDUCERS[name](x, keys, received, num_remove, generator=seeded(1))
    batch, n, dim = x.shape
    assert out.tokens.shape == (batch, n - num_remove, dim)
    assert out.tokens.dtype == x.dtype
    assert out.source_index.shape == (batch, n - num_remove)
    assert out.source_index.dtype == torch.int64
    src = out.source_index
    assert ((src[:, 1:] - src[:, :-1]) > 0).all()
    assert (src >= 0).all() and (src < n).all()
    if name in MERGES:  # the first token always starts the first group
        assert (src[:, 0] == 0).all()


@pytest.mark.parametrize("name", sorted(SPAN_REDUCERS))
def test_num_remove_out_of_range_raises(name):
    x, keys, received = make_inputs(0, n=6)
    for bad in (-1, 6, 9):
        with pytest.raises(ValueError, match="num_remove"):
            SPAN_REDUCERS[name](x, keys, received, bad)


def test_bad_shapes_raise():
    x, keys, received = make_inputs(0, n=6)
    with pytest.raises(ValueError, match="keys"):
        average_merge(x, keys[:, :5], received, 1)
    with pytest.raises(ValueError, match="received"):
        fastv_evict(x, keys, received[:, :5], 1)
    with pytest.raises(ValueError, match="x must be"):
        random_evict(x[0], keys, received, 1)


@pytest.mark.parametrize("name", EVICTIONS)
def test_evictions_gather_the_kept_tokens(name):
    x, keys, received = make_inputs(2, n=30)
    out = SPAN_REDUCERS[name](x, keys, received, 11, generator=seeded(5))
    for b in range(x.shape[0]):
        assert torch.equal(out.tokens[b], x[b, out.source_index[b]])


@pytest.mark.parametrize("name", MERGES)
@pytest.mark.parametrize("num_remove", [1, 5, 12])
def test_merged_tokens_are_group_averages(name, num_remove):
    x, keys, received = make_inputs(3)
    out = SPAN_REDUCERS[name](x, keys, received, num_remove, generator=seeded(2))
    n = x.shape[1]
    weights = received if name == "weighted" else None
    for b in range(x.shape[0]):
        groups = groups_from_starts(out.source_index[b].tolist(), n)
        ref = loop_group_average(x[b], groups, None if weights is None else weights[b])
        torch.testing.assert_close(out.tokens[b].double(), ref, rtol=1e-5, atol=1e-5)
        if name == "atome":
            assert max(len(gr) for gr in groups) <= 2


def test_weighted_and_average_use_the_canonical_selection():
    x, keys, received = make_inputs(4, n=40)
    canonical = weighted_merge_span(x, keys, received, 13)
    ours = weighted_merge_reducer(x, keys, received, 13, generator=seeded(0))
    assert torch.equal(ours.tokens, canonical.tokens) and torch.equal(ours.source_index, canonical.source_index)
    plain = average_merge(x, keys, received, 13)
    unweighted = weighted_merge_span(x, keys, None, 13)
    assert torch.equal(plain.source_index, unweighted.source_index)
    assert torch.equal(plain.source_index, canonical.source_index)  # weights change values, not the edges
    torch.testing.assert_close(plain.tokens, unweighted.tokens)
    assert not torch.allclose(plain.tokens, canonical.tokens)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_equals_per_sample(name):
    x, keys, received = make_inputs(5, batch=4, n=31)
    batched = SPAN_REDUCERS[name](x, keys, received, 9)
    for b in range(4):
        single = SPAN_REDUCERS[name](x[b : b + 1], keys[b : b + 1], received[b : b + 1], 9)
        torch.testing.assert_close(batched.tokens[b : b + 1], single.tokens)
        assert torch.equal(batched.source_index[b : b + 1], single.source_index)


@pytest.mark.parametrize("name", ["random_merge", "random_evict"])
def test_random_methods_follow_the_generator(name):
    x, keys, received = make_inputs(6, batch=2, n=64)
    fn = SPAN_REDUCERS[name]
    a = fn(x, keys, received, 20, generator=seeded(123))
    b = fn(x, keys, received, 20, generator=seeded(123))
    c = fn(x, keys, received, 20, generator=seeded(124))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.source_index, b.source_index)
    assert not torch.equal(a.source_index, c.source_index)
    # each sample draws its own selection
    assert not torch.equal(a.source_index[0], a.source_index[1])


def test_random_merge_picks_edges_uniformly():
    batch, n, m = 3000, 10, 3
    x = torch.randn(batch, n, 2, generator=seeded(0))
    out = random_merge(x, None, None, m, generator=seeded(7))
    counts = torch.zeros(n - 1)
    for row in out.source_index.tolist():
        picked = picked_edges_from_starts(row, n)
        assert len(picked) == m
        counts[picked] += 1
    freq = counts / batch
    expected = m / (n - 1)
    assert (freq - expected).abs().max() < 0.04  # ~4.7 sigma for 3000 draws


def test_random_evict_drops_tokens_uniformly():
    batch, n, m = 3000, 8, 3
    x = torch.arange(n, dtype=torch.float32).view(1, n, 1).expand(batch, n, 1)
    out = random_evict(x, None, None, m, generator=seeded(8))
    kept = torch.zeros(n)
    for row in out.source_index.tolist():
        kept[row] += 1
    assert (kept / batch - (n - m) / n).abs().max() < 0.04


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("name", sorted(SPAN_REDUCERS))
def test_low_precision(name, dtype, tol):
    x, keys, received = make_inputs(9, n=40, dtype=dtype)
    out = SPAN_REDUCERS[name](x, keys, received, 15, generator=seeded(3))
    assert out.tokens.dtype == dtype
    assert torch.isfinite(out.tokens.float()).all()
    # Same rounded inputs in fp32 give the same selection (similarities are fp32 either way) and values.
    ref = SPAN_REDUCERS[name](x.float(), keys.float(), received.float(), 15, generator=seeded(3))
    assert torch.equal(out.source_index, ref.source_index)
    torch.testing.assert_close(out.tokens.float(), ref.tokens, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------------------
# A-ToMe


def test_atome_equals_greedy_reference_when_well_separated():
    checked = 0
    for seed in range(150):
        g = seeded(seed)
        n = int(torch.randint(2, 60, (1,), generator=g))
        keys = torch.randn(2, n, 5, generator=g, dtype=torch.float64)
        x = torch.randn(2, n, 3, generator=g)
        for b in range(2):
            # reference similarities computed independently, in float64
            k = keys[b] / keys[b].norm(dim=-1, keepdim=True)
            sims = (k[:-1] * k[1:]).sum(-1).tolist()
            gaps = [abs(p - q) for p, q in zip(sorted(sims), sorted(sims)[1:])]
            if gaps and min(gaps) < 1e-5:
                continue
            full = greedy_pairs_reference(sims, n)
            for m in {0, len(full) // 2, len(full)}:
                out = atome_merge(x[b : b + 1], keys[b : b + 1].float(), None, m)
                assert picked_edges_from_starts(out.source_index[0].tolist(), n) == greedy_pairs_reference(sims, m)
                checked += 1
    assert checked > 500


def test_atome_selection_with_exact_ties_matches_sequential_greedy():
    # keys from a 3-element alphabet: many exactly equal similarities, broken towards the lower index
    for seed in range(60):
        g = seeded(seed)
        n = int(torch.randint(2, 40, (1,), generator=g))
        alphabet = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        keys = alphabet[torch.randint(0, 3, (1, n), generator=g)]
        sims = adjacent_key_similarity(keys)
        full = greedy_pairs_reference(sims[0].tolist(), n)
        for m in range(len(full) + 1):
            picked = atome_select_pairs(sims, m)[0].nonzero().flatten().tolist()
            assert picked == greedy_pairs_reference(sims[0].tolist(), m)
    all_equal = atome_select_pairs(torch.ones(1, 8), 4)
    assert all_equal[0].nonzero().flatten().tolist() == [0, 2, 4, 6]


def test_atome_pairs_disjoint_and_exact_count_up_to_half():
    for seed in range(40):
        g = seeded(seed)
        n = int(torch.randint(2, 50, (1,), generator=g))
        sims = torch.rand(3, n - 1, generator=g) * 2 - 1
        for m in range(n // 2 + 1):
            picked = atome_select_pairs(sims, m)
            assert (picked.sum(-1) == m).all()
            assert not (picked[:, :-1] & picked[:, 1:]).any()  # no token in two pairs


def test_atome_augments_when_greedy_runs_short():
    # greedy takes edge 1 (tokens 1, 2) and blocks both other pairs; 2 pairs need (0, 1) and (2, 3)
    x = torch.tensor([[[0.0], [2.0], [10.0], [20.0]]])
    keys = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [1.0, 1.1], [0.0, 1.0]]])
    assert greedy_pairs_reference(adjacent_key_similarity(keys)[0].tolist(), 2) == [1]
    out = atome_merge(x, keys, None, 2)
    assert out.source_index.tolist() == [[0, 2]]
    torch.testing.assert_close(out.tokens.flatten(), torch.tensor([1.0, 15.0]))
    one = atome_merge(x, keys, None, 1)
    assert one.source_index.tolist() == [[0, 1, 3]]


def test_atome_fallback_matches_loop_reference():
    augmented = 0
    for seed in range(120):
        g = seeded(1000 + seed)
        n = int(torch.randint(4, 48, (1,), generator=g))
        sims = torch.rand(1, n - 1, generator=g) * 2 - 1
        s = sims[0].tolist()
        for m in range(len(greedy_pairs_reference(s, n)) + 1, n // 2 + 1):
            picked = atome_select_pairs(sims, m)[0].nonzero().flatten().tolist()
            assert picked == atome_reference(s, m)
            augmented += 1
    assert augmented > 50


def test_atome_rejects_more_than_half():
    x, keys, _ = make_inputs(0, n=9)
    atome_merge(x, keys, None, 4)
    with pytest.raises(ValueError, match=r"A-ToMe can remove at most floor\(n/2\) = 4"):
        atome_merge(x, keys, None, 5)
    with pytest.raises(ValueError, match="keys"):
        atome_merge(x, None, None, 2)


# ---------------------------------------------------------------------------------------------------------
# FastV


def test_fastv_keeps_the_most_received_tokens_in_order():
    x, keys, received = make_inputs(11, batch=4, n=50)
    out = fastv_evict(x, keys, received, 20)
    for b in range(4):
        top = sorted(range(50), key=lambda j: (-float(received[b, j]), j))[:30]
        assert out.source_index[b].tolist() == sorted(top)
        # every kept token received at least as much as every dropped one
        dropped = sorted(set(range(50)) - set(top))
        assert received[b, top].min() >= received[b, dropped].max()


def test_fastv_ties_go_to_lower_index_and_received_required():
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    received = torch.tensor([[1.0, 2.0, 1.0, 2.0, 1.0, 1.0]])
    assert fastv_evict(x, None, received, 2).source_index.tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="received"):
        fastv_evict(x, None, None, 2)
