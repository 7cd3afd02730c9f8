"""Shared fixtures: tiny presets (built once per session) and exported graphs in a temp folder."""

from __future__ import annotations

import onnx
import pytest
import torch

from fastadasp.models.registry import build_model


@pytest.fixture(scope="session")
def preset_cache():
    return {}


@pytest.fixture
def tiny(preset_cache):
    def get(name):
        if name not in preset_cache:
            preset_cache[name] = build_model(name, seed=0)
        return preset_cache[name]

    return get


@pytest.fixture
def export_graphs(tmp_path):
    """(lm, ratios, policy, dtype) -> OnnxRuntimeBackend over freshly exported prefill/decode graphs."""

    from fastadasp.exporter.graphs import GraphSpec, build_decode, build_prefill
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    def make(lm, ratios, policy="reference", dtype="fp32", max_audio_tokens=512, debug=True):
        spec = GraphSpec(tuple(ratios), policy, dtype, 17, max_audio_tokens, debug)
        tag = f"{lm.name}-{abs(hash((tuple(ratios), policy, dtype)))}"
        prefill, decode = tmp_path / f"{tag}-prefill.onnx", tmp_path / f"{tag}-decode.onnx"
        onnx.save(build_prefill(lm.decoder, spec), prefill)
        onnx.save(build_decode(lm.decoder, spec), decode)
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
        return OnnxRuntimeBackend(prefill, decode, ratios, lm.args.num_kv_heads, lm.args.head_dim, torch_dtype)

    return make
