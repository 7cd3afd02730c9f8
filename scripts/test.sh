#!/usr/bin/env bash
# Installs what the tests need, checks that layers only import downwards, then runs the tests
# (GPU / TensorRT tests skip themselves with a reason).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
lint-imports --no-cache
exec "$PYTHON" -m pytest -q -m "not slow" -p no:cacheprovider "$@"
