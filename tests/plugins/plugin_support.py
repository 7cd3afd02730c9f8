"""Helpers shared by the plugin tests (importable as `plugin_support`; fixtures live in conftest.py)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("trt_worker.py")
SUPPORTED = Path(__file__).resolve().parents[2] / "plugins" / "weighted_merge" / "supported.json"
REPORT: dict[str, str] = {}


def tensorrt_rtx_or_skip():
    """Skip (with the reason) unless TensorRT-RTX imports here; its bindings may import while their libraries
    fail to load, so every exception counts."""
    try:
        importlib.import_module("tensorrt_rtx")
    except Exception as exc:  # ImportError, or OSError from the shared libraries
        pytest.skip(f"TensorRT-RTX cannot load: {type(exc).__name__}: {exc}")


def run_worker(request: dict, *, env: dict | None = None, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Run tests/plugins/trt_worker.py in a fresh interpreter; returns the finished process."""
    child_env = dict(os.environ)
    child_env.update(env or {})
    return subprocess.run([sys.executable, str(WORKER), json.dumps(request)], capture_output=True, text=True,
                          env=child_env, timeout=timeout, check=False)


def worker_result(proc: subprocess.CompletedProcess) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"TensorRT worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def note(key: str, text: str) -> None:
    """A line for the end-of-session summary (compile time, methods the builder called)."""
    REPORT[key] = text
