"""Command line: `fastadasp plan | run | models` and `export-engine`.

Every user error (unknown model, bad ratio, infeasible target, missing checkpoint) ends in one line on
stderr naming the problem and the fix, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_START_LAYER = {"constant": 2, "decay": 2, "sparse": 3}


class CliError(Exception):
    pass


def _add_schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name (see `fastadasp models`)")
    p.add_argument("--model-path", default=None, help="local checkpoint for released models (nothing is downloaded)")
    p.add_argument("--schedule", choices=("constant", "decay", "sparse"), default="decay")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--flops-target", type=float, default=None, help="fraction of decoder prefill FLOPs to cut, e.g. 0.3")
    target.add_argument("--ratio", type=float, default=None, help="base merge ratio r in [0, 1) instead of a FLOPs target")
    p.add_argument("--start-layer", type=int, default=None, help="first merge layer (sparse: the only one); default 2 (sparse 3)")
    p.add_argument("--audio-tokens", type=int, default=None, help="nominal audio tokens the plan is solved for")
    p.add_argument("--text-tokens", type=int, default=None, help="nominal text tokens around the audio (plan: 64; run: the input's)")


def _plan(args, decoder_args, audio_tokens: int, text_tokens: int | None = None):
    from fastadasp.reduction.schedule import evaluate_schedule, make_schedule, plan_for_flops_target

    shape = decoder_args
    text = text_tokens if text_tokens is not None else (args.text_tokens if args.text_tokens is not None else 64)
    start = args.start_layer if args.start_layer is not None else DEFAULT_START_LAYER[args.schedule]
    if start >= decoder_args.num_layers:
        raise CliError(
            f"--start-layer {start} is past the model's last layer ({decoder_args.num_layers - 1}); pass a smaller one"
        )
    if args.ratio is not None:
        schedule = make_schedule(args.schedule, decoder_args.num_layers, start, args.ratio)
        return evaluate_schedule(shape, schedule, audio_tokens, text)
    target = 0.3 if args.flops_target is None else args.flops_target
    return plan_for_flops_target(shape, args.schedule, start, target, audio_tokens, text)


def cmd_plan(args) -> int:
    from fastadasp.models.registry import decoder_args

    dargs = decoder_args(args.model, args.model_path)
    plan = _plan(args, dargs, args.audio_tokens if args.audio_tokens is not None else 1500)
    data = {"model": args.model, **plan.to_dict()}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"model {args.model}: {dargs.num_layers} layers, d={dargs.hidden_size}, kv dim {dargs.kv_dim}")
        print(f"schedule {plan.schedule.kind} from layer {plan.schedule.start_layer}, base ratio {plan.schedule.base_ratio:.4f}")
        print(f"audio tokens per layer: {plan.tokens_per_layer}")
        target = "" if plan.flops_target is None else f" (target {plan.flops_target:.1%})"
        print(f"decoder prefill FLOPs cut: {plan.flops_reduction:.2%}{target}")
    return 0


def cmd_generate(args) -> int:
    """Generate from an export directory with ONNX Runtime (audio encoder -> prefill -> decode), next to the
    PyTorch reference with the same schedule."""
    import time

    import torch

    from fastadasp.core.manifest import Manifest
    from fastadasp.models.registry import build_model
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fastadasp.runtime.backends.torch_backend import TorchBackend
    from fastadasp.runtime.generate import GenerationConfig, generate
    from fastadasp.core.prompt import PromptInputs

    manifest = Manifest.load(args.export_dir)
    lm = build_model(manifest.model.name, args.model_path)
    gen = torch.Generator().manual_seed(args.seed)
    vocab = lm.args.vocab_size
    prefix = torch.randint(0, vocab - 1, (1, 6), generator=gen)
    suffix = torch.randint(0, vocab - 1, (1, 4), generator=gen)
    if "audio_encoder" in manifest.graphs:
        from fastadasp.exporter.audio_encoder import run_audio_encoder_onnx

        features = {k: v.numpy() for k, v in lm.synthetic_audio_features(1, gen).items()}
        path = f"{args.export_dir}/{manifest.graphs['audio_encoder'].file}"
        audio = torch.from_numpy(run_audio_encoder_onnx(path, **features))
        source = "audio_encoder.onnx on random features"
    else:
        audio = lm.synthetic_prompt(seed=args.seed).audio_embeds
        source = "random audio embeddings"
    scale = lm.prompt_lora_scale(prefix) if lm.needs_lora_scale else None
    inputs = PromptInputs(prefix, audio, suffix, scale)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    backend = OnnxRuntimeBackend.from_export(args.export_dir)
    start = time.perf_counter()
    ours = generate(backend, inputs, config)
    onnx_seconds = time.perf_counter() - start
    reference = generate(TorchBackend(lm.decoder, manifest.ratios, position_policy=manifest.position_policy),
                         inputs, config)
    report = {
        "export_dir": str(args.export_dir), "model": manifest.model.name, "audio_source": source,
        "audio_tokens": inputs.audio_length, "audio_tokens_per_layer": ours.prefill.span_lengths,
        "kv_length_per_layer": backend.cache.lengths, "onnxruntime_tokens": ours.sequences[0].tolist(),
        "torch_reference_tokens": reference.sequences[0].tolist(),
        "identical": ours.sequences.tolist() == reference.sequences.tolist(),
        "onnxruntime_seconds": round(onnx_seconds, 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['model']} from {args.export_dir}: {inputs.audio_length} audio tokens ({source})")
        print(f"audio tokens per layer: {report['audio_tokens_per_layer']}")
        print(f"ONNX Runtime tokens:    {report['onnxruntime_tokens']}  ({onnx_seconds:.2f}s)")
        print(f"PyTorch reference:      {report['torch_reference_tokens']}")
        print("identical" if report["identical"] else "DIFFERENT (see DESIGN.md section 3 on near-tied merges)")
    return 0 if report["identical"] else 1


def cmd_select_layer(args) -> int:
    from fastadasp.models.registry import build_model
    from fastadasp.runtime.calibrate import select_sparse_layer

    lm = build_model(args.model, args.model_path)
    calibration = [lm.synthetic_prompt(batch_size=1, seed=s) for s in range(args.calibration_samples)]
    result = select_sparse_layer(lm, calibration, args.ratio)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for layer, score in sorted(result.scores.items()):
            print(f"layer {layer:3d}  TE {score:.4f}")
        print(f"selected layer {result.selected_layer} (smallest transfer entropy)")
    return 0


def cmd_models(args) -> int:
    from fastadasp.models.registry import get_spec, model_names

    for name in model_names():
        spec = get_spec(name)
        print(f"{name:18s} {spec.description}")
    return 0


def cmd_run(args) -> int:
    """Full vs reduced generation on one input, side by side (the README's default job)."""
    import torch

    from fastadasp.models.registry import build_model
    from fastadasp.runtime.demo import run_comparison

    torch.manual_seed(args.seed)
    if args.flops_target is None and args.ratio is None:
        # Short demo prompts cannot always reach a FLOPs target (text dominates); a ratio always applies.
        args.ratio = 0.3
    lm = build_model(args.model, args.model_path, seed=args.seed)
    report = run_comparison(lm, args, lambda n, text: _plan(args, lm.args, n, text))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from fastadasp.runtime.demo import format_report

        print(format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastadasp", description="FastAdaSP token merging for speech LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="per-layer ratios and token counts for a FLOPs target (needs only the config)")
    _add_schedule_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("run", help="generate with the full and the reduced decoder side by side (tiny presets: no downloads)")
    _add_schedule_args(p)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--position-policy", choices=("reference", "first"), default="reference")
    p.add_argument("--method", default="weighted",
                   choices=("weighted", "average", "random_merge", "random_evict", "atome", "fastv", "h2o"),
                   help="span reducer at the schedule's layers (fastv: use --schedule sparse), or h2o decode-time KV eviction")
    p.add_argument("--kv-budget", type=int, default=None, help="h2o: KV entries kept per layer (default: half the prompt)")
    p.add_argument("--recent-window", type=int, default=None, help="h2o: newest entries always kept (default: budget/4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("generate", help="generate from an export-engine directory with ONNX Runtime (vs the PyTorch reference)")
    p.add_argument("--export-dir", required=True)
    p.add_argument("--model-path", default=None, help="checkpoint for the reference run of a non-preset model")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("select-layer", help="transfer-entropy choice of the sparse schedule's layer on a calibration set")
    p.add_argument("--model", required=True)
    p.add_argument("--model-path", default=None)
    p.add_argument("--ratio", type=float, default=0.5, help="the single-layer reduction ratio to calibrate for")
    p.add_argument("--calibration-samples", type=int, default=4, help="synthetic requests (random inputs on presets)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_select_layer)
    p = sub.add_parser("models", help="list known models and presets")
    p.set_defaults(func=cmd_models)
    return parser


def _run(func, args) -> int:
    from fastadasp.core.manifest import ManifestError
    from fastadasp.models.registry import UnknownModelError
    from fastadasp.reduction.schedule import ScheduleError

    try:
        return func(args)
    except (CliError, UnknownModelError, ScheduleError, FileNotFoundError, ValueError, ManifestError) as exc:
        print(f"fastadasp: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export-engine",
        description="Export schedule-fixed reduced-token prefill/decode graphs (+ audio encoder), a manifest, "
        "and TensorRT engines when TensorRT is available.",
    )
    _add_schedule_args(p)
    p.add_argument("--out", default=None, help="output directory (default: ./engines-<model>-<schedule>)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="graph/engine precision (bf16 runs on TensorRT; ONNX Runtime's CPU provider has no bf16 kernels)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--position-policy", choices=("reference", "first"), default="reference")
    p.add_argument("--audio-tokens-range", default="1:1500:3000", metavar="MIN:OPT:MAX",
                   help="audio tokens the graphs/engines must accept; OPT is the nominal length the plan is solved for")
    p.add_argument("--max-batch", type=int, default=5, help="largest batch x beams an engine profile admits")
    p.add_argument("--max-text-tokens", type=int, default=512, help="largest prefix + suffix length for engine profiles")
    p.add_argument("--max-new-tokens", type=int, default=256, help="decode budget the KV capacity profiles allow")
    p.add_argument("--compute-capability", default=None, help="TensorRT-RTX only: build for this GPU (e.g. 8.6)")
    p.add_argument("--skip-engines", action="store_true", help="stop after the ONNX graphs and manifest")
    return p


def cmd_export(args) -> int:
    from fastadasp.core.manifest import AudioTokenRange
    from fastadasp.exporter.export import ExportConfig, export_model
    from fastadasp.models.registry import build_model

    try:
        token_range = AudioTokenRange.parse(args.audio_tokens_range)
    except ValueError as exc:
        raise CliError(f"--audio-tokens-range {exc}") from None
    lm = build_model(args.model, args.model_path)
    plan = _plan(args, lm.args, token_range.opt)
    out = args.out or f"engines-{args.model}-{args.schedule}"
    print(f"[plan] {plan.schedule.kind} from layer {plan.schedule.start_layer}: decoder prefill FLOPs cut "
          f"{plan.flops_reduction:.1%} at {token_range.opt} audio tokens; audio tokens per layer "
          f"{plan.tokens_per_layer}")
    manifest = export_model(lm, plan.schedule, out, ExportConfig(args.dtype, args.opset, args.position_policy, token_range),
                            plan=plan)
    if args.skip_engines:
        print("[engines] skipped (--skip-engines); ONNX graphs and manifest are in " + out)
        return 0
    from fastadasp.engines.pipeline import EngineBuildConfig, build_engines_for_export

    build_engines_for_export(out, manifest, EngineBuildConfig(args.max_batch, args.max_text_tokens, args.max_new_tokens,
                                                              args.compute_capability))
    return 0


def export_engine_main(argv: list[str] | None = None) -> int:
    args = build_export_parser().parse_args(argv)
    return _run(cmd_export, args)


if __name__ == "__main__":
    sys.exit(main())
