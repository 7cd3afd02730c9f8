#!/usr/bin/env bash
# Installs fastadasp (editable) with its pinned dependencies into the current Python environment.
# Idempotent: a second run only checks. Nothing here downloads model weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import fastadasp, torch, transformers, onnx, onnxruntime, pytest, hypothesis, polygraphy, tensorrt_rtx, matplotlib" 2>/dev/null \
   || [ "$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" != "2.13.0" ]; then
  echo "[setup] installing fastadasp and pinned dependencies (torch 2.13.0 CPU build)..." >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[onnx,dev,tensorrt]"
fi
