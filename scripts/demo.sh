#!/usr/bin/env bash
# The main job on a built-in tiny model (random weights, no downloads):
#   1. plan a 30% decoder-prefill FLOPs cut for the released WavLLM shape (config only),
#   2. export-engine: schedule-fixed prefill/decode graphs, audio encoder, prompt-scale graph, tokenizer,
#      prompt template and manifest, and TensorRT-RTX engines when it is installed (it is, via setup.sh;
#      builds run on a CPU),
#   3. a real request: a WAV file (synthesised here: 3 s of a gliding two-voice tone at 44.1 kHz stereo) and a
#      prompt -> text through the export with ONNX Runtime. The weights are random, so the text is gibberish;
#      the stats (stderr) show what the merge did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-artifacts/tiny-wavllm-decay}"
WAV="${WAV:-artifacts/demo-speech.wav}"
"$PYTHON" -m fastadasp.cli plan --model wavllm --schedule decay --flops-target 0.3 --audio-tokens 1500
echo
"$PYTHON" -c 'import sys; from fastadasp.cli import export_engine_main; sys.exit(export_engine_main())' \
  --model tiny-wavllm --schedule decay --start-layer 1 --flops-target 0.3 \
  --audio-tokens-range 1:300:512 --max-batch 5 --max-text-tokens 256 --max-new-tokens 64 --out "$OUT" "$@"
echo
mkdir -p "$(dirname "$WAV")"
"$PYTHON" - "$WAV" <<'PY'
import sys

import numpy as np
import soundfile

rate = 44100
t = np.arange(3 * rate) / rate
pitch = 140 + 60 * np.sin(2 * np.pi * 0.7 * t)  # a voice-like glide with syllable-rate loudness
voice = np.sin(2 * np.pi * np.cumsum(pitch) / rate) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2)
noise = 0.01 * np.random.default_rng(0).standard_normal(len(t))
soundfile.write(sys.argv[1], 0.3 * np.stack([voice + noise, 0.8 * voice + noise], axis=1), rate, subtype="PCM_16")
PY
echo "[demo] $WAV: 3 s, 44.1 kHz stereo -> text (random weights: the text is gibberish)"
"$PYTHON" -m fastadasp.cli generate --export-dir "$OUT" --audio "$WAV" --prompt "Transcribe the audio." --num-beams 5
