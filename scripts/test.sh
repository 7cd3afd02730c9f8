#!/usr/bin/env bash
# Installs what the tests need, then runs them (GPU / TensorRT tests skip themselves with a reason).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" -m pytest -q -m "not slow" -p no:cacheprovider "$@"
