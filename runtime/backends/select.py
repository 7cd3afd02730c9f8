"""Which backend runs an export: `select_backend(export_dir, "auto")` takes the fastest one that works here.

auto tries, in order: TensorRT (an engine entry for this GPU and an installed toolkit, deserialised),
ONNX Runtime (its CUDA execution provider when the installed onnxruntime has one, else the CPU provider), then
the PyTorch reference. Each step that fails adds its reason to the one line `select_backend` returns, e.g.
"TensorRT: no engine for this GPU (…); using ONNX Runtime CPU". A broken export (a manifest that does not
load, a file that does not hash) stops every choice: falling back would hide it.

Naming a backend runs exactly that one, and its failure is the error. A caller with its own PyTorch path
(runtime/pipeline.py also needs the model's audio front-end) passes torch_fallback=False and gets
NoExportBackend, whose message is the reasons, where auto would fall back to PyTorch.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from fastadasp.core.errors import InvalidOption, UserError
from fastadasp.core.manifest import Manifest, ManifestError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
CUDA_PROVIDER = "CUDAExecutionProvider"


class NoExportBackend(UserError):
    """Neither TensorRT nor ONNX Runtime can run the export here (select_backend(..., torch_fallback=False));
    the message is why, one clause per backend."""


class SelectedBackend(NamedTuple):
    backend: Any  # follows runtime/backends/base.py: Backend
    kind: str  # "tensorrt" | "onnxruntime" | "torch"
    reason: str  # one line: what runs, and why the faster ones do not


def _short(exc: BaseException, limit: int = 240) -> str:
    text = getattr(exc, "summary", None) or str(exc) or type(exc).__name__
    if not isinstance(exc, UserError):
        text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def onnxruntime_providers() -> list[str]:
    """The execution providers to ask ONNX Runtime for: CUDA (then CPU for what it lacks) when the installed
    onnxruntime has it, else CPU. ImportError without onnxruntime."""
    import onnxruntime as ort

    if CUDA_PROVIDER in ort.get_available_providers():
        return [CUDA_PROVIDER, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _tensorrt(export_dir, flavor: str | None) -> SelectedBackend:
    from fastadasp.runtime.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend.from_export(export_dir, flavor=flavor)
    return SelectedBackend(backend, "tensorrt", f"using TensorRT ({backend.description})")


def _onnxruntime(export_dir, threads: int | None) -> SelectedBackend:
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    providers = onnxruntime_providers()
    if providers[0] == CUDA_PROVIDER:
        backend = OnnxRuntimeBackend.from_export(export_dir, threads=threads, providers=providers)
        return SelectedBackend(backend, "onnxruntime", "using ONNX Runtime CUDA")
    backend = OnnxRuntimeBackend.from_export(export_dir, threads=threads)
    return SelectedBackend(backend, "onnxruntime", "using ONNX Runtime CPU")


def _torch(export_dir, model, model_path: str | None) -> SelectedBackend:
    from fastadasp.runtime.backends.torch_backend import TorchBackend

    # Only metadata is read here: the reference runs the model, not the exported files.
    manifest = Manifest.load(export_dir, verify_hashes=False)
    if model is None:
        from fastadasp.models.registry import build_model, get_spec

        if not get_spec(manifest.model.name).is_preset and model_path is None:
            raise InvalidOption(f"the PyTorch backend runs {manifest.model.name} from its checkpoint: pass --model-path")
        model = build_model(manifest.model.name, model_path)
    backend = TorchBackend(model.decoder, manifest.ratios, position_policy=manifest.position_policy)
    return SelectedBackend(backend, "torch", "using the PyTorch reference")


def select_backend(export_dir: str | os.PathLike, backend: str = "auto", *, flavor: str | None = None, model=None,
                   model_path: str | None = None, threads: int | None = None,
                   torch_fallback: bool = True) -> SelectedBackend:
    """The backend that runs `export_dir`, its kind and a one-line reason.

    `flavor` restricts TensorRT to "tensorrt" or "tensorrt-rtx"; `model` (a SpeechLM) or `model_path` serve the
    PyTorch reference (tiny presets need neither); `threads` sizes ONNX Runtime's CPU pool. Without
    `torch_fallback`, auto raises NoExportBackend instead of building the PyTorch reference.
    """
    if backend not in BACKENDS:
        raise InvalidOption(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt":
        return _tensorrt(export_dir, flavor)
    if backend == "onnxruntime":
        return _onnxruntime(export_dir, threads)
    if backend == "torch":
        return _torch(export_dir, model, model_path)
    Manifest.load(export_dir, verify_hashes=False)  # a directory that is no export stops here, in one line
    reasons = []
    for name, attempt in (("TensorRT", lambda: _tensorrt(export_dir, flavor)),
                          ("ONNX Runtime", lambda: _onnxruntime(export_dir, threads))):
        try:
            chosen = attempt()
        except ManifestError:
            raise
        except Exception as exc:  # not installed, no engine for this GPU, a precision it cannot run, ...
            reasons.append(f"{name}: {_short(exc)}")
            continue
        return chosen._replace(reason="; ".join([*reasons, chosen.reason]))
    if not torch_fallback:
        raise NoExportBackend("; ".join(reasons))
    chosen = _torch(export_dir, model, model_path)
    return chosen._replace(reason="; ".join([*reasons, chosen.reason]))
