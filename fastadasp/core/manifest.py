"""manifest.json: the versioned contract between export, engine building and every runtime (Python, C++).

The manifest is a tree of frozen dataclasses with one `load` and one `save`. Its JSON Schema
(`manifest.schema.json` beside this file) is generated from these dataclasses by `manifest_schema()`; a test
keeps the published file equal to the generated one, so third parties and the C++ runtime validate against
exactly what Python writes.

A reader refuses a manifest of another format version, or whose files do not hash to what it records (a
half-copied or re-exported directory), with one line naming the fastadasp that reads it or the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fastadasp.core.errors import UserError
from fastadasp.core.files import atomic_write_text, sha256_file
from fastadasp.core.shapes import DecoderArgs
from fastadasp.core.typed_json import from_json, schema_of, to_json

MANIFEST_FORMAT = "fastadasp-manifest"
MANIFEST_VERSION = 2
MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
# Which fastadasp releases read each manifest version (for the one-line refusal).
READERS = {1: "fastadasp 0.1.x", 2: "fastadasp 0.2.x"}


class ManifestError(UserError, ValueError):
    """A manifest this fastadasp cannot use; the message is one line naming the fix."""


# --------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class AudioTokenRange:
    """Audio tokens the graphs and engine profiles accept; opt is the nominal length the plan is solved for."""

    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"audio token range needs 1 <= MIN <= OPT <= MAX, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str) -> "AudioTokenRange":
        try:
            lo, opt, hi = (int(v) for v in text.split(":"))
        except ValueError:
            raise ValueError(f"must be MIN:OPT:MAX integers, e.g. 1:1500:3000; got {text!r}") from None
        return cls(lo, opt, hi)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class ServingLimits:
    """What the export is built to serve; engine profiles are sized from these and every runtime checks
    requests against them before any work starts."""

    max_batch: int = 5  # rows per call: batch x beams
    max_text_tokens: int = 512  # prefix + suffix tokens
    max_new_tokens: int = 256  # decode steps (KV capacity beyond the prompt)

    def __post_init__(self):
        for name in ("max_batch", "max_text_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    args: DecoderArgs
    prompt_lora: bool  # WavLLM: the graphs take lora_scale [B, D]
    config_hash: str


@dataclass(frozen=True)
class ScheduleEntry:
    """The merge schedule baked into the graphs: ratio of layer i is ratio_numerators[i] / ratio_denominator."""

    kind: str
    start_layer: int
    base_ratio: float
    ratio_numerators: list[int]
    ratio_denominator: int
    flops_target: float | None
    flops_reduction_nominal: float | None
    nominal_audio_tokens: int
    tokens_per_layer_nominal: list[int]

    @property
    def ratios(self) -> list[float]:
        return [q / self.ratio_denominator for q in self.ratio_numerators]


@dataclass(frozen=True)
class TensorSpec:
    dtype: str  # numpy name: float32, float16, bfloat16, int64
    shape: list[int | str]  # a str names a dynamic dim


@dataclass(frozen=True)
class GraphEntry:
    file: str  # the .onnx to open
    files: list[str]  # every file the graph needs (the .onnx and its external data), relative to the export
    sha256: dict[str, str]  # file -> SHA-256, for every entry of `files`
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    audio_tokens: int | None = None  # audio encoder only: tokens produced per clip


@dataclass(frozen=True)
class PluginEntry:
    op: str
    domain: str
    plugin_version: str
    plugin_namespace: str
    attributes: list[str]
    standard_op_body: str
    max_audio_tokens: int  # the function body's scan covers groups of up to this many tokens


@dataclass(frozen=True)
class EngineFile:
    file: str
    sha256: str
    bytes: int
    cache_key: str  # key in the engine cache it came from
    build_seconds: float | None  # None when reused from the cache
    profile: dict[str, list[list[int]]]  # input -> [min, opt, max] shapes


@dataclass(frozen=True)
class PluginLibrary:
    file: str  # absolute path the engine build loaded
    sha256: str


@dataclass(frozen=True)
class EngineEntry:
    """Engines for one toolkit + target, keyed in `Manifest.engines` by "<flavor>-<version>/<target>"."""

    flavor: str  # "tensorrt" | "tensorrt-rtx"
    toolkit_version: str
    compute_capability: str  # "8.6", ..., or "portable" (TensorRT-RTX's default set)
    precision: str
    plugin_libraries: list[PluginLibrary]
    graphs: dict[str, EngineFile]


@dataclass(frozen=True)
class AudioTokenBranch:
    """One path from audio to tokens: the length after each stage is (L + 2 * padding - kernel) // stride + 1."""

    input: str  # "frames" (feature frames, one per hop) or "samples" (waveform samples at sample_rate)
    stages: list[list[int]]  # [kernel, stride, padding] per length-changing stage, in order


@dataclass(frozen=True)
class AudioEntry:
    """How a runtime turns audio into the audio encoder's inputs, and how many audio tokens they make.

    Audio is mono at sample_rate, padded to whole hops; one encoder call takes min_frames..clip_frames feature
    frames (a clip: the encoder's window, 30 s for Whisper-style encoders). Longer audio is cut into clips whose
    embeddings are concatenated (long_audio "chunk") or cut to the first clip (long_audio "truncate"). Tokens of
    one clip: the minimum over token_branches plus extra_tokens.
    """

    sample_rate: int
    features: str  # "whisper_log_mel": log10 mel power spectrogram, clamped to max - 8, then (x + 4) / 4
    mel_bins: int
    n_fft: int
    hop_length: int
    inputs: dict[str, str]  # audio encoder input -> what it takes: "log_mel" [B, mel_bins, F] | "waveform" [B, F * hop]
    dims: dict[str, list[int]]  # the encoder's dynamic dims ("frames", "samples") -> [min, opt, max]
    min_frames: int
    clip_frames: int
    long_audio: str  # "chunk" | "truncate"
    token_branches: list[AudioTokenBranch]
    extra_tokens: int = 0

    def clip_tokens(self, frames: int) -> int:
        """Audio tokens the encoder makes from one clip of `frames` feature frames."""
        counts = []
        for branch in self.token_branches:
            length = frames if branch.input == "frames" else frames * self.hop_length
            for kernel, stride, padding in branch.stages:
                length = (length + 2 * padding - kernel) // stride + 1
            counts.append(length)
        return max(min(counts), 0) + self.extra_tokens

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames * self.hop_length / self.sample_rate


@dataclass(frozen=True)
class TextEntry:
    """The tokenizer and prompt template that turn a text prompt into the prefill's prefix / suffix ids and
    generated ids back into text."""

    tokenizer: str  # Hugging Face `tokenizers` JSON (tokenizer.json)
    template: str  # prompt_template.json: text before / after the audio span, stop tokens
    sha256: dict[str, str]  # file -> SHA-256 of both files
    source: str  # where they came from (the checkpoint's files, or built offline for a tiny preset)


LENGTH_RULE = {
    "audio": "n[0] = N; n[i+1] = n[i] - min(n[i] * q[i] // ratio_denominator, max(n[i] - 1, 0))",
    "kv": "T[i] = P + n[i] + S (prefill); decode writes at cache_lengths[i] and grows it by one",
    "decode_position": "P + N + S + step (the full prompt length, whatever was merged)",
}


@dataclass(frozen=True)
class Manifest:
    fastadasp_version: str
    model: ModelEntry
    schedule: ScheduleEntry
    position_policy: str
    audio_tokens_range: AudioTokenRange
    dtype: str
    opset: int
    graphs: dict[str, GraphEntry]
    plugin: PluginEntry
    limits: ServingLimits
    length_rule: dict[str, str] = field(default_factory=lambda: dict(LENGTH_RULE))
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    audio: AudioEntry | None = None  # None: the model takes audio embeddings, not audio
    text: TextEntry | None = None  # None: no tokenizer was found for the model; requests pass token ids
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    # ---------------------------------------------------------------- io
    def to_dict(self) -> dict:
        return to_json(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = MANIFEST_NAME) -> "Manifest":
        _check_header(data, source)
        return from_json(cls, data, lambda where, what: ManifestError(
            f"{source}: {where or 'the top level'} {what}; re-run export-engine to write a complete manifest"))

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike, *, verify_hashes: bool = True) -> "Manifest":
        """Read and check `directory/manifest.json`; ManifestError (one line) on any problem."""
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise ManifestError(f"{directory} is not a directory; point at a directory written by `export-engine`")
        if not path.is_file():
            raise ManifestError(f"no {MANIFEST_NAME} in {directory}: point at a directory written by `export-engine`")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path} is not valid JSON ({exc}); re-run export-engine") from None
        manifest = cls.from_dict(data, str(path))
        if verify_hashes:
            manifest.verify_files(directory)
        return manifest

    def verify_files(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        for role, graph in self.graphs.items():
            for file in graph.files:
                _verify(directory / file, graph.sha256.get(file), f"{role} graph file {file}")
        if self.text is not None:
            for file in (self.text.tokenizer, self.text.template):
                _verify(directory / file, self.text.sha256.get(file), f"text file {file}")
        for key, entry in self.engines.items():
            for role, engine in entry.graphs.items():
                _verify(directory / engine.file, engine.sha256, f"{role} engine {engine.file} ({key})")

    # ---------------------------------------------------------------- updates (never in place)
    def with_engines(self, key: str, entry: EngineEntry) -> "Manifest":
        return dataclasses.replace(self, engines={**self.engines, key: entry})

    @property
    def ratios(self) -> list[float]:
        return self.schedule.ratios


def _verify(path: Path, expected: str | None, what: str) -> None:
    if not path.exists():
        raise ManifestError(f"{what} listed in {MANIFEST_NAME} is missing from {path.parent}; re-run export-engine")
    if expected is None or sha256_file(path) != expected:
        raise ManifestError(f"{path} does not match the hash in {MANIFEST_NAME} (modified or partly copied); "
                            "re-run export-engine")


def _check_header(data, source: str) -> None:
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(f"{source} is not a fastadasp manifest (format {got!r}); point at an export-engine directory")
    version = data.get("version")
    if version != MANIFEST_VERSION:
        reader = READERS.get(version) if isinstance(version, int) else None
        who = f"it is read by {reader}" if reader else "no fastadasp release reads it"
        raise ManifestError(
            f"{source} has manifest version {version!r} ({who}); this fastadasp reads version {MANIFEST_VERSION}: "
            "re-export with this fastadasp, or use the fastadasp that reads that version"
        )


def config_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def manifest_schema() -> dict:
    """The JSON Schema (draft 2020-12) of manifest.json, generated from the dataclasses above."""
    defs: dict = {}
    root = schema_of(Manifest, defs)
    top = dict(defs.pop("Manifest"))
    top["properties"] = {**top["properties"], "format": {"const": MANIFEST_FORMAT},
                         "version": {"const": MANIFEST_VERSION}}
    top["required"] = sorted(set(top["required"]) | {"format", "version"})
    assert root == {"$ref": "#/$defs/Manifest"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fastadasp.dev/schemas/manifest-v{MANIFEST_VERSION}.json",
        "title": f"fastadasp export manifest, version {MANIFEST_VERSION}",
        **top,
        "$defs": dict(sorted(defs.items())),
    }


def write_schema(path: str | os.PathLike = SCHEMA_PATH) -> None:
    atomic_write_text(path, json.dumps(manifest_schema(), indent=2) + "\n")


if __name__ == "__main__":  # regenerate the published schema: python -m fastadasp.core.manifest
    write_schema()
    print(SCHEMA_PATH)
