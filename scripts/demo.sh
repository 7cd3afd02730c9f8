#!/usr/bin/env bash
# The default job on a built-in tiny model (random weights, no downloads): plan a 30% FLOPs cut,
# then generate with the full and the reduced decoder side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m fastadasp.cli plan --model wavllm --schedule decay --flops-target 0.3 --audio-tokens 1500
echo
"$PYTHON" -m fastadasp.cli run --model tiny-qwen2-audio --schedule constant --start-layer 1 --flops-target 0.3 "$@"
