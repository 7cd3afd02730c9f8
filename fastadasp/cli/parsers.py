"""Argument parsers for `fastadasp …` and `export-engine`: every option has a help line that states its
default, abbreviations are refused (so `--audio` never silently becomes `--audio-tokens`), and a parse error
is one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import sys

from fastadasp.core.choices import POSITION_POLICIES, PRECISIONS, REDUCTION_METHODS, SCHEDULE_KINDS

# Options people reach for that belong to another command, with the one that does what they meant.
HINTS = {
    "--audio-tokens": "export-engine takes --audio-tokens-range MIN:OPT:MAX (OPT is the length the plan is solved for)",
    "--audio": "audio files are an input of `fastadasp generate --export-dir DIR --audio FILE`; this command runs on "
               "synthetic requests",
    "--export-dir": "--export-dir belongs to `fastadasp generate`",
}


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, not usage + message
        for option, hint in HINTS.items():
            if f"unrecognized arguments: {option}" in message or f" {option} " in f" {message} ":
                message = f"{message} ({hint})"
                break
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--debug", action="store_true", help="show a traceback for errors")


def _model(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="model name or tiny preset (see `fastadasp models`)")
    p.add_argument("--model-path", default=None,
                   help="local checkpoint of a released model (nothing is downloaded); not for tiny presets")


def _schedule(p: argparse.ArgumentParser, audio_tokens: bool = True) -> None:
    p.add_argument("--schedule", choices=SCHEDULE_KINDS, default=None,
                   help="merge schedule (default: decay; sparse for --method fastv)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--flops-target", type=float, default=None,
                        help="fraction of decoder prefill FLOPs to cut, e.g. 0.3 (default: 0.3 unless --ratio)")
    target.add_argument("--ratio", type=float, default=None, help="base merge ratio r in [0, 1) instead of a FLOPs target")
    p.add_argument("--start-layer", type=int, default=None,
                   help="first merge layer (sparse: the only one) (default: 2; sparse 3)")
    if audio_tokens:
        p.add_argument("--audio-tokens", type=int, default=None,
                       help="audio tokens the plan is solved for (default: plan 1500; run the input's)")
    p.add_argument("--text-tokens", type=int, default=None,
                   help="text tokens around the audio for the plan (default: plan 64; run the input's)")


def _generation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate")
    p.add_argument("--num-beams", type=int, default=1, help="beam width (1: greedy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic request (and random baselines)")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastadasp", description="FastAdaSP token merging for speech-language models: plan, "
                    "run and generate (export with `export-engine`).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("plan", help="per-layer ratios and token counts for a FLOPs target (needs only the config)",
                       description="Solve a merge schedule for a FLOPs target or evaluate one for a ratio.")
    _model(p)
    _schedule(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    _common(p)

    p = sub.add_parser("run", help="generate with the full and the reduced decoder side by side (PyTorch)",
                       description="Full vs reduced generation on one synthetic request with the PyTorch reference.")
    _model(p)
    _schedule(p)
    _generation(p)
    p.add_argument("--position-policy", choices=POSITION_POLICIES, default="reference",
                   help="positions of merged tokens: reference (renumbered, as published) or first (first member's)")
    p.add_argument("--method", default="weighted", choices=REDUCTION_METHODS,
                   help="span reducer at the schedule's layers (fastv needs --schedule sparse), or h2o "
                        "(decode-time KV eviction; takes no schedule)")
    p.add_argument("--kv-budget", type=int, default=None, help="h2o only: KV entries kept per layer (default: half the prompt)")
    p.add_argument("--recent-window", type=int, default=None, help="h2o only: newest entries always kept (default: budget/4)")
    _common(p)

    p = sub.add_parser("generate", help="audio file + prompt -> text through an export-engine directory",
                       description="Run a request through an export: the audio is read, resampled and cut as the "
                                   "model does, encoded by audio_encoder.onnx; the prompt goes through the export's "
                                   "template and tokenizer; prefill and decode run with TensorRT, ONNX Runtime or PyTorch. "
                                   "Prints the text (stats on stderr), or one JSON object with --json.")
    p.add_argument("--export-dir", required=True, help="directory written by export-engine")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--audio", default=None, metavar="FILE",
                        help="audio file (WAV, FLAC, OGG, MP3, ...; any rate and channel count)")
    source.add_argument("--audio-embeds", default=None, metavar="FILE.npy",
                        help="audio embeddings [N, hidden_size] instead of audio, for a model exported without an "
                             "audio encoder (plain decoders)")
    p.add_argument("--prompt", default="Transcribe the audio.", help="the instruction, placed by the model's template")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="most tokens to generate (default: the export's decode budget, export-engine --max-new-tokens)")
    p.add_argument("--num-beams", type=int, default=1, help="beam width (1: greedy)")
    p.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime", "torch"), default="auto",
                   help="what runs the export: auto (TensorRT when an engine for this GPU loads, else ONNX Runtime "
                        "(CUDA when it has it), else the PyTorch reference; it says which and why), tensorrt, "
                        "onnxruntime, or torch (the PyTorch reference; builds the model)")
    p.add_argument("--compare-torch", action="store_true",
                   help="also run the PyTorch reference with the same schedule and report whether the tokens are identical "
                        "(exit status 1 when they differ)")
    p.add_argument("--model-path", default=None,
                   help="checkpoint of a released model, for --backend torch / --compare-torch")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, stats) on stdout")
    _common(p)

    p = sub.add_parser("select-layer", help="transfer-entropy choice of the sparse schedule's layer",
                       description="Pick the sparse schedule's merge layer by transfer entropy on a calibration set.")
    _model(p)
    p.add_argument("--ratio", type=float, default=0.5, help="the single-layer reduction ratio to calibrate for")
    p.add_argument("--calibration-samples", type=int, default=4, help="synthetic requests in the calibration set")
    p.add_argument("--json", action="store_true", help="print the scores as JSON on stdout")
    _common(p)

    p = sub.add_parser("build-plugin", help="build the WeightedMerge TensorRT plugin library (CMake + nvcc)",
                       description="Build the WeightedMerge TensorRT plugin; print the library path and its SHA-256. "
                                   "An up-to-date build is reused.")
    p.add_argument("--force", action="store_true", help="rebuild even when an up-to-date build exists")
    p.add_argument("--build-dir", default=None,
                   help="build root (default: $FASTADASP_PLUGIN_BUILD_DIR or ~/.cache/fastadasp/plugins)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _common(p)

    p = sub.add_parser("models", help="list known models and presets", description="List models and tiny presets.")
    _common(p)
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    p = Parser(prog="export-engine",
               description="Export schedule-fixed reduced-token prefill/decode graphs (+ audio encoder), a manifest, "
                           "and TensorRT engines when TensorRT or TensorRT-RTX is available. The output directory is "
                           "replaced as a whole only when everything is written.")
    _model(p)
    _schedule(p, audio_tokens=False)
    p.add_argument("--out", default=None, help="output directory (default: ./engines-<model>-<schedule>)")
    p.add_argument("--dtype", choices=PRECISIONS, default="fp32",
                   help="graph/engine precision (bf16 runs on TensorRT; ONNX Runtime's CPU provider has no bf16 kernels)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..21")
    p.add_argument("--position-policy", choices=POSITION_POLICIES, default="reference",
                   help="positions of merged tokens: reference (renumbered, as published) or first")
    p.add_argument("--audio-tokens-range", default="1:1500:3000", metavar="MIN:OPT:MAX",
                   help="audio tokens the graphs/engines accept; OPT is the nominal length the plan is solved for")
    p.add_argument("--max-batch", type=int, default=5, help="largest batch x beams the export serves")
    p.add_argument("--max-text-tokens", type=int, default=512, help="largest prefix + suffix length the export serves")
    p.add_argument("--max-new-tokens", type=int, default=256, help="largest decode budget (KV capacity) the export serves")
    p.add_argument("--compute-capability", default=None,
                   help="TensorRT-RTX only: build for this GPU, e.g. 8.6 (default: its portable set; TensorRT: the local GPU)")
    p.add_argument("--engine-cache", default=None,
                   help="engine cache directory (default: $FASTADASP_ENGINE_CACHE or ~/.cache/fastadasp/engines)")
    p.add_argument("--plugin", choices=("auto", "on", "off"), default="auto",
                   help="WeightedMerge nodes as our TensorRT plugin: on (build it, fail if it can't), auto (use it "
                        "when it builds here), off (TensorRT inlines the standard-op function body)")
    p.add_argument("--skip-engines", action="store_true", help="stop after the ONNX graphs and manifest")
    _common(p)
    return p
