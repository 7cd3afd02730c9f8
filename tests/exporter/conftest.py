"""Exports built once per test session and only read by the tests that use them."""

from __future__ import annotations

import pytest

from export_checks import export_once


@pytest.fixture(scope="session")
def exports(preset_cache, tmp_path_factory):
    """(preset, opset=17) -> ExportRun: the preset exported once with a decay schedule (prefill, decode and,
    when it has one, audio_encoder.onnx) into a session temp folder; the manifest is checked against
    manifest.schema.json. Tests must not write into the folder."""
    cache = {}

    def get(name: str, opset: int = 17):
        if (name, opset) not in cache:
            cache[name, opset] = export_once(preset_cache, name, opset, tmp_path_factory.mktemp(f"{name}-opset{opset}"))
        return cache[name, opset]

    return get
