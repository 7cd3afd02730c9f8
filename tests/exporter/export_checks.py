"""Helpers the exporter tests share: one export per (preset, opset), margin-controlled requests, and the
m-th-edge arithmetic the selection checks use."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from fastadasp.core.manifest import AudioTokenRange, Manifest, manifest_schema
from fastadasp.exporter.export import ExportConfig, export_model
from fastadasp.models.registry import build_model
from fastadasp.reduction.merge import adjacent_key_similarity
from fastadasp.reduction.schedule import make_schedule
from fastadasp.runtime.backends.torch_backend import TorchBackend
from support import MarginRecorder

# Below this m-th-edge margin two backends may legitimately pick different edges (fp32 rounding of the
# similarities differs between PyTorch and ONNX Runtime by ~1e-7); parity tests draw requests above it.
PARITY_MARGIN = 1e-4


# Loggers the torch ONNX exporter and its onnxscript passes write to, and the audio encoder's own.
EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")
AUDIO_ENCODER_LOGGER = "fastadasp.exporter.audio_encoder"


@dataclass(frozen=True)
class ExportRun:
    lm: object
    directory: Path
    schedule: object
    manifest: Manifest
    shown: list[logging.LogRecord] = field(default_factory=list)  # what reached the exporters' log handlers
    debug: list[logging.LogRecord] = field(default_factory=list)  # what the audio encoder logged at DEBUG


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextmanager
def collect_logs():
    """(shown, debug): records that reach the exporter loggers' handlers, and the audio encoder's DEBUG ones."""
    shown, debug = _Collect(), _Collect()
    loggers = [logging.getLogger(n) for n in EXPORTER_LOGGERS]
    own = logging.getLogger(AUDIO_ENCODER_LOGGER)
    level = own.level
    for logger in loggers:
        logger.addHandler(shown)
    own.addHandler(debug)
    own.setLevel(logging.DEBUG)
    try:
        yield shown.records, debug.records
    finally:
        for logger in loggers:
            logger.removeHandler(shown)
        own.removeHandler(debug)
        own.setLevel(level)


# (preset, opset) -> ExportRun, shared by every test module that imports this one (tests/exporter/conftest.py,
# tests/runtime/test_pipeline.py, tests/cli/test_generate.py), so each preset is exported once per session.
_SHARED: dict[tuple[str, int], ExportRun] = {}


def shared_export(preset_cache: dict, tmp_path_factory, name: str, opset: int = 17) -> ExportRun:
    """The session's export of `name` at `opset` (see export_once); tests must not write into its folder."""
    if (name, opset) not in _SHARED:
        _SHARED[name, opset] = export_once(preset_cache, name, opset, tmp_path_factory.mktemp(f"{name}-opset{opset}"))
    return _SHARED[name, opset]


def export_once(preset_cache: dict, name: str, opset: int, directory: Path) -> ExportRun:
    import jsonschema

    if name not in preset_cache:
        preset_cache[name] = build_model(name, seed=0)
    lm = preset_cache[name]
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    config = ExportConfig(opset=opset, audio_tokens=AudioTokenRange(1, 30, 128))
    with collect_logs() as (shown, debug):
        manifest = export_model(lm, schedule, directory, config, progress=lambda _: None)
    # Session fixtures run outside the per-test schema check of tests/conftest.py: validate here.
    jsonschema.Draft202012Validator(manifest_schema()).validate(manifest.to_dict())
    return ExportRun(lm, directory, schedule, manifest, shown, debug)


def reduced_case(lm, seed: int, policy: str, ratios, batch_size: int = 2):
    """A request whose m-th-edge margins are all > PARITY_MARGIN under the reference (re-drawn otherwise),
    the reference backend that ran it, and its prefill result."""
    for attempt in range(8):
        inputs = lm.synthetic_prompt(batch_size=batch_size, seed=seed + 100 * attempt)
        recorder = MarginRecorder()
        reference = TorchBackend(lm.decoder, ratios, position_policy=policy, reducer=recorder)
        result = reference.prefill(inputs, max_new_tokens=8)
        if recorder.min_margin > PARITY_MARGIN:
            return inputs, reference, result
    pytest.fail("could not draw a request without near-ties at the m-th edge")


def span_similarities(key_cache: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Adjacent-key cosine similarities the merge sees: key_cache [B, Hkv, T, d] (post-RoPE, as cached) ->
    the span [start, start + length) with every KV head concatenated -> [B, length - 1] (fp32)."""
    span = key_cache[:, :, start:start + length].transpose(1, 2).flatten(2)  # [B, n, Hkv * d]
    return adjacent_key_similarity(span)


def mth_edge_margin(sims: torch.Tensor, m: int) -> torch.Tensor:
    """Per row: (m-th largest similarity) - ((m+1)-th largest); inf when every or no edge is picked."""
    if m <= 0 or m >= sims.shape[1]:
        return torch.full((sims.shape[0],), float("inf"))
    ranked = sims.double().sort(dim=-1, descending=True).values
    return (ranked[:, m - 1] - ranked[:, m]).float()


def kept_from_similarities(sims: torch.Tensor, m: int) -> torch.Tensor:
    """The merge's selection from its similarities: pick the m largest edges; every group of tokens joined by
    picked edges keeps its first index. sims [B, n-1] -> source indices [B, n - m], ascending."""
    n = sims.shape[1] + 1
    picked = torch.zeros_like(sims, dtype=torch.bool)
    if m > 0:
        picked.scatter_(1, sims.topk(m, dim=1).indices, True)
    starts = torch.cat([torch.ones_like(picked[:, :1]), ~picked], dim=1)  # token j starts a group
    return torch.stack([torch.arange(n)[row] for row in starts])
