"""The typed manifest: round trip, published schema, one-line refusals."""

import dataclasses
import json

import jsonschema
import pytest

from fastadasp.core.manifest import (
    MANIFEST_VERSION,
    SCHEMA_PATH,
    AudioEntry,
    AudioTokenBranch,
    AudioTokenRange,
    GraphEntry,
    Manifest,
    ManifestError,
    ModelEntry,
    PluginEntry,
    ScheduleEntry,
    ServingLimits,
    TensorSpec,
    TextEntry,
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


def _audio() -> AudioEntry:
    # WavLLM's shape of rule: Whisper frames through two convs and a 4x subsampler, WavLM samples through its
    # conv stack and the same subsampler; a clip makes the smaller count.
    whisper = [[3, 1, 1], [3, 2, 1], [3, 2, 1], [3, 2, 1]]
    wavlm = [[10, 5, 0]] + [[3, 2, 0]] * 4 + [[2, 2, 0]] * 2 + [[3, 2, 1], [3, 2, 1]]
    return AudioEntry(16000, "whisper_log_mel", 80, 400, 160, {"input_features": "log_mel", "waveform": "waveform"},
                      {"frames": [3, 3000, 3000], "samples": [480, 480000, 480000]}, 3, 3000, "chunk",
                      [AudioTokenBranch("frames", whisper), AudioTokenBranch("samples", wavlm)])


def test_audio_token_rule():
    audio = _audio()
    assert audio.clip_tokens(3000) == 375  # 30 s at 12.5 Hz: Whisper's 1500 frames and WavLM's 1499 both give 375
    assert audio.clip_tokens(2993) == 374  # Whisper's stream gives 375 here, WavLM's 374: the shorter counts
    assert audio.clip_tokens(3) == 1 and audio.clip_seconds == 30.0
    qwen2 = AudioEntry(16000, "whisper_log_mel", 128, 400, 160, {"input_features": "log_mel"},
                       {"frames": [3, 3000, 3000]}, 3, 3000, "truncate",
                       [AudioTokenBranch("frames", [[3, 1, 1], [3, 2, 1], [2, 2, 0]])], extra_tokens=2)
    assert qwen2.clip_tokens(3000) == 752  # Qwen2-Audio's 750 per 30 s, + 2 to show extra_tokens counts


def test_audio_and_text_entries_round_trip_and_are_verified(tmp_path):
    text = TextEntry("tokenizer.json", "prompt_template.json", {"tokenizer.json": "1" * 64,
                                                               "prompt_template.json": "2" * 64}, "built offline")
    m = dataclasses.replace(_manifest(), graphs={}, audio=_audio(), text=text)
    data = m.to_dict()
    jsonschema.validate(data, manifest_schema())
    assert Manifest.from_dict(json.loads(json.dumps(data))) == m
    old = _manifest().to_dict()  # a manifest written before these entries existed still reads
    assert Manifest.from_dict(json.loads(json.dumps(old))).audio is None
    m.save(tmp_path)
    with pytest.raises(ManifestError, match="text file tokenizer.json .* is missing"):
        Manifest.load(tmp_path)
