"""Shared fixtures: tiny presets (built once per session), exported graphs in a temp folder, and a check
that every manifest any test writes validates against the published JSON Schema."""

from __future__ import annotations

import onnx
import pytest

from fastadasp.core.dtypes import precision
from fastadasp.core.manifest import Manifest, manifest_schema
from fastadasp.models.registry import build_model


@pytest.fixture(autouse=True)
def manifests_follow_the_published_schema(monkeypatch):
    """Every export in the tests goes through Manifest.save: validate it against manifest.schema.json first."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(manifest_schema())
    save = Manifest.save

    def checked_save(self, directory):
        validator.validate(self.to_dict())
        return save(self, directory)

    monkeypatch.setattr(Manifest, "save", checked_save)


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
        return OnnxRuntimeBackend(prefill, decode, ratios, lm.args.num_kv_heads, lm.args.head_dim,
                                  precision(dtype).torch)

    return make
