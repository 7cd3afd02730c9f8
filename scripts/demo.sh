#!/usr/bin/env bash
# The main job on a built-in tiny model (random weights, no downloads):
#   1. plan a 30% decoder-prefill FLOPs cut for the released WavLLM shape (config only),
#   2. export-engine: schedule-fixed prefill/decode graphs + audio encoder + manifest, and TensorRT-RTX
#      engines when it is installed (it is, via setup.sh; builds run on a CPU),
#   3. generate from the export with ONNX Runtime next to the PyTorch reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-artifacts/tiny-wavllm-decay}"
"$PYTHON" -m fastadasp.cli plan --model wavllm --schedule decay --flops-target 0.3 --audio-tokens 1500
echo
"$PYTHON" -c 'import sys; from fastadasp.cli import export_engine_main; sys.exit(export_engine_main())' \
  --model tiny-wavllm --schedule decay --start-layer 1 --flops-target 0.3 \
  --audio-tokens-range 1:300:512 --max-batch 5 --max-text-tokens 64 --max-new-tokens 64 --out "$OUT" "$@"
echo
"$PYTHON" -m fastadasp.cli generate --export-dir "$OUT" --num-beams 5
