"""Which engine builder is installed and which GPUs it can target.

Two toolkits are supported, chosen at run time by :func:`load_tensorrt`:

* ``tensorrt`` -- NVIDIA TensorRT 10+ (module ``tensorrt``). It needs a CUDA GPU and builds for that GPU.
* ``tensorrt-rtx`` -- NVIDIA TensorRT-RTX (module ``tensorrt_rtx``, ``pip install tensorrt-rtx-cu13``).
  Its builder runs ahead of time on a CPU-only machine and targets chosen compute capabilities
  (``IBuilderConfig.num_compute_capabilities`` / ``set_compute_capability``); kernels are compiled
  just in time on the target GPU when the engine is loaded.

Both are imported lazily through :func:`_import_module`, the one seam tests replace to simulate a machine
without them; the rest of the package works without either.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from fastadasp.core.errors import InvalidOption, UserError
from fastadasp.engines.util import one_line

log = logging.getLogger("fastadasp.engines")

# (flavor, module name), in the order load_tensorrt tries them.
_CANDIDATES = (("tensorrt", "tensorrt"), ("tensorrt-rtx", "tensorrt_rtx"))
FLAVOR_ENV = "FASTADASP_TENSORRT_FLAVOR"  # "tensorrt" or "tensorrt-rtx": use only that toolkit

INSTALL_HINT = (
    "install TensorRT-RTX with `pip install tensorrt-rtx-cu13` (builds engines on a CPU-only machine too) "
    "or TensorRT 10+ matching your CUDA (`pip install tensorrt-cu12` / `tensorrt-cu13`, needs a GPU)"
)

# GPUs users know each compute capability by, for messages that ask them to pick one.
GPU_NAMES = {
    "7.5": "RTX 20, T4",
    "8.0": "A100, A30",
    "8.6": "RTX 30, A10, A40",
    "8.7": "Jetson Orin",
    "8.9": "RTX 40, L4, L40",
    "9.0": "H100, H200",
    "10.0": "B200",
    "12.0": "RTX 50, RTX PRO Blackwell",
    "12.1": "DGX Spark",
}


class TensorRTUnavailable(UserError):
    """Neither TensorRT nor TensorRT-RTX could be imported; the message is a single line saying why."""


class EngineBuildError(UserError):
    """Parsing or building an engine failed, or was asked for something the toolkit cannot do; the message is
    one line, carrying the builder's logged errors where it has some."""


# --------------------------------------------------------------------------------------------- loading


def _import_module(name: str):
    """Import a toolkit module by name. Tests replace this function to simulate which toolkits exist."""
    return importlib.import_module(name)


def load_tensorrt(flavor: str | None = None) -> tuple[Any, str]:
    """Import TensorRT (tried first) or TensorRT-RTX and return ``(module, flavor)``.

    ``flavor`` (or the ``FASTADASP_TENSORRT_FLAVOR`` environment variable) restricts the choice to one
    toolkit. A toolkit whose Python bindings import but whose shared libraries are missing raises
    ``OSError``/``RuntimeError`` rather than ``ImportError``; every such failure counts as "not available".
    Raises :class:`TensorRTUnavailable` with a one-line reason when nothing loads.
    """
    wanted = flavor or os.environ.get(FLAVOR_ENV) or None
    candidates = _candidates(wanted)
    failures = []
    for flav, module_name in candidates:
        try:
            module = _import_module(module_name)
        except Exception as exc:  # ImportError, or OSError/RuntimeError from shared libraries that fail to load
            failures.append(f"{module_name}: {type(exc).__name__}: {one_line(exc, 160)}")
            continue
        missing = [a for a in ("Builder", "OnnxParser", "Logger") if not hasattr(module, a)]
        if missing:
            failures.append(f"{module_name}: imported {getattr(module, '__file__', '?')} but it lacks {', '.join(missing)}")
            continue
        return module, flav
    restricted = f" (restricted by {FLAVOR_ENV}={wanted})" if wanted and not flavor else ""
    raise TensorRTUnavailable(
        "cannot load an engine builder (" + "; ".join(failures) + ")" + restricted + "; " + INSTALL_HINT
    )


def _candidates(wanted: str | None) -> tuple[tuple[str, str], ...]:
    if wanted is None:
        return _CANDIDATES
    chosen = tuple(c for c in _CANDIDATES if wanted in c)
    if not chosen:
        names = ", ".join(f for f, _ in _CANDIDATES)
        where = "" if wanted != os.environ.get(FLAVOR_ENV) else f" (from {FLAVOR_ENV})"
        raise InvalidOption(f"unknown TensorRT flavor {wanted!r}{where}; choose one of {names}")
    return chosen


@dataclass(frozen=True)
class ToolkitInfo:
    """What identifies the engine builder in a cache key: flavor, its version and the build device."""

    flavor: str
    version: str
    device: str  # "aot" for TensorRT-RTX (no device involved); the local GPU's name and SM for TensorRT


def local_gpu() -> tuple[str | None, str | None]:
    """(name, "major.minor") of CUDA device 0 via torch, or (None, None) when unknown."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception:  # pragma: no cover - torch without CUDA, driver problems
        pass
    return None, None


def describe_toolkit(flavor: str | None = None) -> ToolkitInfo:
    trt, flav = load_tensorrt(flavor)
    version = str(getattr(trt, "__version__", "unknown"))
    if flav == "tensorrt-rtx":
        return ToolkitInfo(flav, version, "aot")
    name, cc = local_gpu()
    return ToolkitInfo(flav, version, f"{name} sm{cc}" if name else "unknown-gpu")


# --------------------------------------------------------------------------------------------- targets


def normalize_compute_capability(cc: str | float | None, what: str = "compute capability") -> str | None:
    """"8.6", "86", "sm86", "SM_86", 8.6 -> "8.6"; "12.0"/"sm120" -> "12.0"; "current" -> "current".

    `what` names the value in the error (e.g. the CLI option).
    """
    if cc is None:
        return None
    text = str(cc).strip().lower().replace("_", "")
    if text in ("current", "native", "local"):
        return "current"
    text = text.removeprefix("sm").removeprefix("compute")
    m = re.fullmatch(r"(\d+)\.(\d)", text) or re.fullmatch(r"(\d+)(\d)", text)
    if not m:
        raise InvalidOption(f"{what} {cc!r} is not like '8.6' or 'sm86'")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def rtx_targets(trt) -> list[str]:
    """Compute capabilities this TensorRT-RTX can build for, ascending ("7.5", ..., "12.0")."""
    members = [k for k in trt.ComputeCapability.__members__ if re.fullmatch(r"SM\d+", k)]
    return [f"{int(k[2:-1])}.{k[-1]}" for k in sorted(members, key=lambda k: (int(k[2:-1]), int(k[-1])))]


def _describe_targets(targets: list[str]) -> str:
    return ", ".join(f"{cc} ({GPU_NAMES[cc]})" if cc in GPU_NAMES else cc for cc in targets)


def builds_for_chosen_targets(trt) -> bool:
    """Whether this toolkit's builder targets a chosen compute capability (TensorRT-RTX) rather than the
    GPU it runs on (TensorRT)."""
    return hasattr(getattr(trt, "IBuilderConfig", None), "set_compute_capability")


def trt_compute_capability(trt, cc: str, what: str = "compute capability"):
    """The ``trt.ComputeCapability`` member for a normalized `cc`, or EngineBuildError listing the valid ones."""
    member = "CURRENT" if cc == "current" else "SM" + cc.replace(".", "")
    members = trt.ComputeCapability.__members__
    if member not in members:
        version = getattr(trt, "__version__", "")
        raise EngineBuildError(
            f"{what} {cc} is not a TensorRT-RTX {version} target; choose one of "
            f"{_describe_targets(rtx_targets(trt))} or 'current' (this machine's GPU); data-center GPUs such as "
            f"H100/H200 (9.0) need TensorRT, not TensorRT-RTX: install TensorRT on a machine with that GPU "
            "and leave --compute-capability unset"
        )
    return members[member]


def check_local_target(flavor: str, cc: str | None) -> str | None:
    """For TensorRT (which builds only for the GPU it runs on): the compute capability an engine will have.

    Raises EngineBuildError when `cc` names another GPU; unknown local GPUs only get a warning.
    """
    _, local = local_gpu()
    if cc is None or cc == "current":
        return local
    if local is None:
        log.warning("%s builds for the local GPU; cannot confirm it is compute capability %s", flavor, cc)
    elif cc != local:
        raise EngineBuildError(f"{flavor} builds only for the local GPU (compute capability {local}), not {cc}; "
                               "use TensorRT-RTX to build for another GPU")
    return cc


def check_target(compute_capability: str | float | None, flavor: str | None = None,
                 what: str = "compute capability") -> str | None:
    """Normalize `compute_capability` and check the installed toolkit can build for it, before any work starts.

    Returns the normalized value. Without a toolkit there is nothing to check against; the caller learns
    that from :func:`load_tensorrt` when it tries to build.
    """
    cc = normalize_compute_capability(compute_capability, what)
    if cc is None:
        return None
    try:
        trt, flav = load_tensorrt(flavor)
    except TensorRTUnavailable:
        return cc
    if builds_for_chosen_targets(trt):
        trt_compute_capability(trt, cc, what)
    else:
        check_local_target(flav, cc)
    return cc
