"""Exports built once per test session and only read by the tests that use them."""

from __future__ import annotations

import pytest

from export_checks import shared_export


@pytest.fixture(scope="session")
def exports(preset_cache, tmp_path_factory):
    """(preset, opset=17) -> ExportRun: the preset exported once with a decay schedule (prefill, decode, and when
    it has them audio_encoder.onnx, prompt_scale.onnx, tokenizer and template) into a session temp folder; the
    manifest is checked against manifest.schema.json. Tests must not write into the folder."""

    def get(name: str, opset: int = 17):
        return shared_export(preset_cache, tmp_path_factory, name, opset)

    return get
