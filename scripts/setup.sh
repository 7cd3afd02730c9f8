#!/usr/bin/env bash
# Installs fastadasp (editable) with the exact versions CI tests (constraints.txt) into the current Python.
# Idempotent: a second run only checks. Nothing here downloads model weights.
# torch: `pip install torch==2.13.0` takes the CPU build where one is on local disk (these machines); a GPU
# user keeps their own CUDA build of torch inside the range pyproject.toml declares (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import fastadasp.core, torch, transformers, onnx, onnxruntime, soundfile, soxr, tokenizers, pytest, hypothesis, polygraphy, tensorrt_rtx, matplotlib, importlinter, jsonschema" 2>/dev/null \
   || [ "$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" != "2.13.0" ]; then
  echo "[setup] installing fastadasp and the pinned versions of constraints.txt (torch 2.13.0)..." >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -c constraints.txt "torch==2.13.0"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[onnx,dev,tensorrt]"
fi
# TensorRT 10 headers for compiling the WeightedMerge plugin where no TensorRT SDK is installed. --no-deps:
# only its headers are used, and its dependencies would pull in ~1 GB (triton).
"$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('kernel_lens') is None)" 2>/dev/null \
  || "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt "kernel-lens==2.0.1"
# C++ runtime (runtime/cpp): CMake, a C++17 compiler, nlohmann_json and GoogleTest from the distribution.
if command -v apt-get >/dev/null 2>&1 && ! { [ -f /usr/include/nlohmann/json.hpp ] && [ -f /usr/include/gtest/gtest.h ]; }; then
  echo "[setup] installing cmake, g++, nlohmann-json3-dev, libgtest-dev for the C++ runtime..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get install -y -qq cmake g++ nlohmann-json3-dev libgtest-dev >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq cmake g++ nlohmann-json3-dev libgtest-dev >/dev/null; } \
    || echo "[setup] could not install the C++ runtime's packages; its tests will skip with the reason" >&2
fi
