"""The typed manifest: round trip, published schema, one-line refusals."""

import json

import jsonschema
import pytest

from fastadasp.core.manifest import (
    MANIFEST_VERSION,
    SCHEMA_PATH,
    AudioTokenRange,
    GraphEntry,
    Manifest,
    ManifestError,
    ModelEntry,
    PluginEntry,
    ScheduleEntry,
    ServingLimits,
    TensorSpec,
    manifest_schema,
)
from fastadasp.core.shapes import DecoderArgs


def _manifest() -> Manifest:
    args = DecoderArgs(64, 16, 2, 2, 1, 8, 32)
    return Manifest(
        fastadasp_version="0.2.0",
        model=ModelEntry("tiny", "llama", args, False, "abc"),
        schedule=ScheduleEntry("decay", 1, 0.5, [0, 32768], 65536, None, None, 30, [30, 30, 15]),
        position_policy="reference",
        audio_tokens_range=AudioTokenRange(1, 30, 128),
        dtype="fp32",
        opset=17,
        graphs={"prefill": GraphEntry("prefill.onnx", ["prefill.onnx"], {"prefill.onnx": "0" * 64},
                                      {"x": TensorSpec("float32", ["batch", 3])}, {})},
        plugin=PluginEntry("WeightedMerge", "fastadasp", "1", "fastadasp", ["ratio_numerator"], "body", 128),
        limits=ServingLimits(2, 8, 4),
    )


def test_published_schema_is_the_generated_one():
    assert json.loads(SCHEMA_PATH.read_text()) == manifest_schema(), \
        "regenerate with: python -m fastadasp.core.manifest"


def test_round_trip_and_schema(tmp_path):
    m = _manifest()
    data = m.to_dict()
    jsonschema.validate(data, manifest_schema())
    assert Manifest.from_dict(json.loads(json.dumps(data))) == m
    assert m.ratios == [0.0, 0.5]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.pop("schedule"), "'schedule' is missing"),
        (lambda d: d["schedule"].pop("ratio_numerators"), "'schedule.ratio_numerators' is missing"),
        (lambda d: d["model"]["args"].update(hidden_size="wide"), "'model.args.hidden_size' must be int"),
        (lambda d: d.update(version=1), "version 1 (it is read by fastadasp 0.1.x)"),
        (lambda d: d.update(version=99), "no fastadasp release reads it"),
        (lambda d: d.update(format="other"), "not a fastadasp manifest"),
    ],
)
def test_bad_manifests_are_refused_in_one_line(tmp_path, edit, message):
    data = _manifest().to_dict()
    edit(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        Manifest.load(tmp_path, verify_hashes=False)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_schema_rejects_what_the_reader_rejects():
    data = _manifest().to_dict()
    data["version"] = MANIFEST_VERSION + 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, manifest_schema())
    data = _manifest().to_dict()
    data["graphs"]["prefill"]["unexpected"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, manifest_schema())


def test_files_are_verified(tmp_path):
    m = _manifest()
    m.save(tmp_path)
    with pytest.raises(ManifestError, match="prefill graph file prefill.onnx .* is missing"):
        Manifest.load(tmp_path)
    (tmp_path / "prefill.onnx").write_bytes(b"x")
    with pytest.raises(ManifestError, match="does not match the hash"):
        Manifest.load(tmp_path)
