"""Which engines of an export run here: the installed TensorRT toolkits, the manifest's engine entries, and the
choice between them (flavor, exact version, compute capability; a TensorRT-RTX "portable" entry serves every
GPU in that toolkit's default set). No match is one line listing what the export holds and the export-engine
command that builds the missing engines. runtime/backends/tensorrt_backend.py runs what is chosen here."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastadasp.core.errors import InvalidOption, UserError
from fastadasp.core.manifest import EngineEntry, Manifest
from fastadasp.engines.toolkit import (
    FLAVOR_ENV,
    TensorRTUnavailable,
    load_tensorrt,
    normalize_compute_capability,
    rtx_targets,
)

# Python module name -> flavor, as fastadasp.engines.toolkit and the manifest spell them.
_MODULE_FLAVORS = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}


class EngineSelectionError(UserError):
    """The export holds no engine for this GPU and toolkit. The message lists what it holds and the command that
    builds the missing engines; `summary` is the short form `select_backend` reports when it falls back."""

    def __init__(self, message: str, summary: str):
        super().__init__(message)
        self.summary = summary


class EngineLoadError(UserError):
    """The engines cannot be loaded here (no GPU, an engine or plugin library that does not load); one line with
    the fix. `summary`: the short form `select_backend` reports when it falls back."""

    def __init__(self, message: str, summary: str | None = None):
        super().__init__(message)
        self.summary = summary or message


def toolkit_flavor(trt: Any, flavor: str | None = None) -> str:
    """"tensorrt" or "tensorrt-rtx" for a TensorRT Python module (`flavor` overrides, e.g. for a stand-in)."""
    if flavor is not None:
        if flavor not in _MODULE_FLAVORS.values():
            raise InvalidOption(f"unknown TensorRT flavor {flavor!r}; choose one of {', '.join(_MODULE_FLAVORS.values())}")
        return flavor
    name = getattr(trt, "__name__", "").split(".")[0]
    if name not in _MODULE_FLAVORS:
        raise ValueError(f"cannot tell the TensorRT flavor of module {name!r}; pass flavor='tensorrt' or 'tensorrt-rtx'")
    return _MODULE_FLAVORS[name]


def toolkit_version(trt: Any) -> str:
    # The same spelling fastadasp.engines.toolkit.describe_toolkit records in engine entries.
    return str(getattr(trt, "__version__", "unknown"))


def portable_targets(trt: Any, flavor: str) -> list[str]:
    """Compute capabilities a TensorRT-RTX engine built without a target runs on: its targets from Ampere (8.0)
    on; Turing (7.5) needs an engine built for it. TensorRT engines are never portable here."""
    if flavor != "tensorrt-rtx" or not hasattr(trt, "ComputeCapability"):
        return []
    return [cc for cc in rtx_targets(trt) if float(cc) >= 8.0]


def entry_target(entry: EngineEntry) -> str | None:
    """The compute capability an entry was built for ("8.6"), "portable", or None when it does not say.

    TensorRT entries name the GPU they were built on ("NVIDIA H100 80GB HBM3 sm9.0", engines/pipeline.py)."""
    text = entry.compute_capability
    if text == "portable":
        return text
    match = re.search(r"sm(\d+\.\d+)$", text)
    if match:
        return match.group(1)
    try:
        return normalize_compute_capability(text)
    except InvalidOption:
        return None


@dataclass(frozen=True)
class Toolkit:
    module: Any
    flavor: str
    version: str
    portable: tuple[str, ...]  # compute capabilities a "portable" entry of this toolkit runs on

    @classmethod
    def of(cls, module: Any, flavor: str | None = None) -> "Toolkit":
        flav = toolkit_flavor(module, flavor)
        return cls(module, flav, toolkit_version(module), tuple(portable_targets(module, flav)))

    def __str__(self) -> str:
        return f"{self.flavor} {self.version}"


def _why_not(entry: EngineEntry, toolkit: Toolkit, cc: str) -> str | None:
    """None when `entry` runs with this toolkit on a GPU of compute capability `cc`; else the reason, briefly."""
    if entry.flavor != toolkit.flavor:
        return f"{entry.flavor}, not {toolkit.flavor}"
    if entry.toolkit_version != toolkit.version:
        return f"{entry.flavor} {entry.toolkit_version}; {toolkit} is installed"
    target = entry_target(entry)
    if target == "portable":
        if cc in toolkit.portable:
            return None
        return f"its portable set {', '.join(toolkit.portable) or '(none)'} lacks {cc}"
    if target != cc:
        return f"built for {target or entry.compute_capability}"
    return None


def choose_engine_entry(manifest: Manifest, directory: str | os.PathLike, toolkits: Sequence[Toolkit], cc: str | None,
                        gpu_name: str | None = None) -> tuple[str, EngineEntry, Toolkit]:
    """(key, entry, toolkit) of the engines to run on a GPU of compute capability `cc`.

    The first toolkit with a matching entry wins; for one toolkit an entry built for exactly this GPU is preferred
    over a portable one (its kernels were chosen for it). No match is one EngineSelectionError line listing what
    the directory holds, why each entry does not fit, and the export-engine command that builds the missing ones.
    """
    if cc is None:
        raise EngineLoadError("the compute capability of the GPU to run on is unknown; pass compute_capability")
    for toolkit in toolkits:
        fitting = [(key, e) for key, e in manifest.engines.items() if _why_not(e, toolkit, cc) is None]
        fitting.sort(key=lambda item: entry_target(item[1]) == "portable")
        if fitting:
            key, entry = fitting[0]
            return key, entry, toolkit
    gpu = f"{gpu_name}, compute capability {cc}" if gpu_name else f"compute capability {cc}"
    installed = " and ".join(str(t) for t in toolkits)
    if manifest.engines:
        held = "; ".join(f"{key} ({_why_not(e, toolkits[0], cc)})" for key, e in manifest.engines.items())
        holds = f"it holds {held}"
    else:
        holds = "it holds no engines, only ONNX graphs"
    summary = f"no engine for this GPU ({gpu}) and {installed} in {directory}"
    message = f"{summary}: {holds}; {_build_hint(manifest, directory, toolkits, cc)}"
    raise EngineSelectionError(message, summary=f"no engine for this GPU ({gpu}) and {installed}; {holds}")


def _build_hint(manifest: Manifest, directory, toolkits: Sequence[Toolkit], cc: str) -> str:
    """The export-engine command that rebuilds this export with engines for this GPU and the preferred toolkit."""
    builder = toolkits[0]
    if builder.flavor == "tensorrt-rtx" and cc not in rtx_targets(builder.module):
        # TensorRT-RTX has no kernels for data-center GPUs (H100/H200 are 9.0): only TensorRT builds for them.
        return (f"{builder} cannot build for compute capability {cc}; install TensorRT 10+ on this machine, then run "
                f"`{export_engine_command(manifest, directory, 'tensorrt', cc)}`")
    return f"build them with `{export_engine_command(manifest, directory, builder.flavor, cc)}`"


def export_engine_command(manifest: Manifest, directory, flavor: str, cc: str | None) -> str:
    """The export-engine command line that re-exports `manifest`'s graphs and builds engines with `flavor` (for
    compute capability `cc` with TensorRT-RTX; TensorRT builds for the GPU it runs on)."""
    from fastadasp.models.registry import UnknownModelError, get_spec

    s, limits = manifest.schedule, manifest.limits
    try:
        preset = get_spec(manifest.model.name).is_preset
    except UnknownModelError:
        preset = False
    parts = [f"{FLAVOR_ENV}={flavor}", "export-engine", "--model", manifest.model.name]
    if not preset:
        parts += ["--model-path", "CHECKPOINT"]
    parts += ["--schedule", s.kind]
    parts += ["--flops-target", repr(s.flops_target)] if s.flops_target is not None else ["--ratio", repr(s.base_ratio)]
    parts += ["--start-layer", str(s.start_layer), "--dtype", manifest.dtype, "--opset", str(manifest.opset),
              "--position-policy", manifest.position_policy, "--audio-tokens-range", str(manifest.audio_tokens_range),
              "--max-batch", str(limits.max_batch), "--max-text-tokens", str(limits.max_text_tokens),
              "--max-new-tokens", str(limits.max_new_tokens)]
    if flavor == "tensorrt-rtx" and cc:
        parts += ["--compute-capability", cc]
    parts += ["--out", os.fspath(directory)]
    return " ".join(p if p.startswith(FLAVOR_ENV) else shlex.quote(p) for p in parts)



def load_toolkits(flavor: str | None) -> list[Toolkit]:
    """Every toolkit that loads, TensorRT first (the order fastadasp.engines.toolkit tries them), so an export
    holding only TensorRT-RTX engines still runs where both are installed. `flavor` or $FASTADASP_TENSORRT_FLAVOR
    keeps one; nothing loading is TensorRTUnavailable with each toolkit's reason."""
    if flavor is not None or os.environ.get(FLAVOR_ENV):
        module, flav = load_tensorrt(flavor)
        return [Toolkit.of(module, flav)]
    toolkits = []
    for flav in _MODULE_FLAVORS.values():
        try:
            module, flav = load_tensorrt(flav)
        except TensorRTUnavailable:
            continue
        toolkits.append(Toolkit.of(module, flav))
    if not toolkits:
        load_tensorrt(None)  # raises TensorRTUnavailable naming why each toolkit failed
    return toolkits
