"""Shared checkpoint helpers: the Meta -> Hugging Face rotary permutation and its inverse."""

from __future__ import annotations

import pytest
import torch

from checkpoint_reference import SHAPE, SHAPE_GQA, hf_llama, hf_qk_scores, meta_qk_scores
from fastadasp.models.checkpoint import permute_rotary, unpermute_rotary


def test_permute_rotary_round_trip_and_matches_transformers_formula():
    g = torch.Generator().manual_seed(1)
    n_heads, head_dim, dim = 4, 8, 24
    w = torch.randn(n_heads * head_dim, dim, generator=g)
    hf = permute_rotary(w, n_heads)
    # transformers' convert_llama_weights_to_hf.permute, written out for this shape.
    expected = w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(n_heads * head_dim, dim)
    assert torch.equal(hf, expected)
    assert not torch.equal(hf, w)
    assert torch.equal(unpermute_rotary(hf, n_heads), w)
    assert torch.equal(permute_rotary(unpermute_rotary(w, n_heads), n_heads), w)
    b = torch.randn(n_heads * head_dim, generator=g)
    assert torch.equal(permute_rotary(b, n_heads), permute_rotary(b[:, None], n_heads)[:, 0])
    assert torch.equal(unpermute_rotary(permute_rotary(b, n_heads), n_heads), b)
    s = torch.randn(3, n_heads * head_dim, generator=g)  # per-channel scale [B, out]
    assert torch.equal(permute_rotary(s, n_heads, dim=-1), permute_rotary(s.T, n_heads).T)
    assert torch.equal(unpermute_rotary(permute_rotary(s, n_heads, dim=-1), n_heads, dim=-1), s)
    with pytest.raises(ValueError):
        permute_rotary(torch.zeros(4 * 3, 2), 4)  # odd head_dim


def test_permutation_maps_meta_interleaved_rope_onto_hf_half_split_rope():
    """q.k scores of Meta-layout weights under interleaved complex RoPE equal those of the permuted weights
    under transformers' half-split RoPE -- the property the permutation exists for."""
    for shape in (SHAPE, SHAPE_GQA):
        model = hf_llama(shape)
        attn = model.model.layers[0].self_attn
        wq_hf, wk_hf = attn.q_proj.weight.detach(), attn.k_proj.weight.detach()
        wq_meta = unpermute_rotary(wq_hf, shape.num_heads)
        wk_meta = unpermute_rotary(wk_hf, shape.num_kv_heads)
        x = torch.randn(1, 9, shape.hidden_size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            hf = hf_qk_scores(model, wq_hf, wk_hf, x)
            meta = meta_qk_scores(wq_meta, wk_meta, x, shape.num_heads, shape.num_kv_heads)
            unpermuted = hf_qk_scores(model, wq_meta, wk_meta, x)
        torch.testing.assert_close(meta, hf, rtol=1e-5, atol=1e-5)
        assert (unpermuted - meta).abs().max() > 1e-2  # without the permutation the scores differ
