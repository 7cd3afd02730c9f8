"""The commands behind `fastadasp …` and `export-engine`. Each turns the parsed options into config
dataclasses, checks every limit it can before a model is built or a file is written, then calls the layers
below (they never see argparse)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from fastadasp.core.errors import InvalidOption
from fastadasp.core.progress import Progress, say
from fastadasp.reduction.schedule import PlanRequest



# --------------------------------------------------------------------------------------------- shared checks


def plan_request(args, default_kind: str = "decay") -> PlanRequest:
    request = PlanRequest(args.schedule or default_kind, args.flops_target, args.ratio, args.start_layer)
    request.validate()
    for name in ("audio_tokens", "text_tokens"):
        value = getattr(args, name, None)
        if value is not None and value < (1 if name == "audio_tokens" else 0):
            raise InvalidOption(f"--{name.replace('_', '-')} must be >= {1 if name == 'audio_tokens' else 0}, got {value}")
    return request


def check_model_options(name: str, path: str | None) -> None:
    """Preset vs released model and the checkpoint path, before anything is loaded."""
    from fastadasp.models.registry import get_spec

    spec = get_spec(name)
    if spec.is_preset and path is not None:
        raise InvalidOption(f"--model-path is for released models; {name} is a tiny preset built from random "
                            "weights (drop --model-path, or name the released model, e.g. --model "
                            f"{spec.family})")
    if path is not None and not os.path.exists(path):
        raise InvalidOption(f"--model-path {path}: no such file or directory")


def load_model(name: str, path: str | None, seed: int = 0):
    """The model, after the options are checked (an unreadable checkpoint is the registry's one-line error)."""
    from fastadasp.models.registry import build_model

    check_model_options(name, path)
    return build_model(name, path, seed=seed)


def check_positions(lm, prompt_tokens: int, max_new_tokens: int) -> None:
    limit = lm.args.max_position_embeddings
    if prompt_tokens + max_new_tokens > limit:
        raise InvalidOption(f"--max-new-tokens {max_new_tokens}: the {prompt_tokens}-token prompt plus {max_new_tokens} "
                            f"new tokens passes {lm.name}'s {limit} positions; pass at most {max(limit - prompt_tokens, 0)}")


def _generation_config(args):
    from fastadasp.runtime.generate import GenerationConfig

    config = GenerationConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    config.validate()
    return config


def _token_progress(label: str, total: int):
    bar = Progress(label, total)

    def on_step(done: int) -> None:
        bar.update(done)
        if done >= total:
            bar.close()

    return on_step


# --------------------------------------------------------------------------------------------- plan


def cmd_plan(args) -> int:
    from fastadasp.models.registry import decoder_args

    request = plan_request(args)
    check_model_options(args.model, args.model_path)
    # A released shape plans from its built-in config; a checkpoint path is read for its config.
    dargs = load_model(args.model, args.model_path).args if args.model_path else decoder_args(args.model)
    plan = request.resolve(dargs, args.audio_tokens or 1500, 64 if args.text_tokens is None else args.text_tokens)
    if args.json:
        print(json.dumps({"model": args.model, **plan.to_dict()}, indent=2))
        return 0
    print(f"model {args.model}: {dargs.num_layers} layers, d={dargs.hidden_size}, kv dim {dargs.kv_dim}")
    print(f"schedule {plan.schedule.kind} from layer {plan.schedule.start_layer}, base ratio {plan.schedule.base_ratio:.4f}")
    print(f"audio tokens per layer: {plan.tokens_per_layer}")
    target = "" if plan.flops_target is None else f" (target {plan.flops_target:.1%})"
    print(f"decoder prefill FLOPs cut: {plan.flops_reduction:.2%}{target}")
    return 0


# --------------------------------------------------------------------------------------------- run


def cmd_run(args) -> int:
    """Full vs reduced generation on one input, side by side (the README's default job)."""
    import torch

    from fastadasp.core.choices import SINGLE_LAYER_METHODS
    from fastadasp.runtime.demo import format_report, run_comparison
    from fastadasp.runtime.methods import MethodConfig

    generation = _generation_config(args)
    check_model_options(args.model, args.model_path)
    method = MethodConfig(args.method, args.position_policy, args.kv_budget, args.recent_window, args.seed)
    if args.method == "h2o":
        given = [o for o, v in (("--schedule", args.schedule), ("--flops-target", args.flops_target),
                                ("--ratio", args.ratio), ("--start-layer", args.start_layer),
                                ("--audio-tokens", args.audio_tokens), ("--text-tokens", args.text_tokens)) if v is not None]
        if given:
            raise InvalidOption(f"--method h2o evicts KV entries during decode and merges nothing: drop {', '.join(given)} "
                                "(size it with --kv-budget / --recent-window)")
    default_kind = "sparse" if args.method in SINGLE_LAYER_METHODS else "decay"
    request = plan_request(args, default_kind)
    if request.flops_target is None and request.ratio is None:
        # Short demo prompts cannot always reach a FLOPs target (text dominates); a ratio always applies.
        request = PlanRequest(request.kind, None, 0.3, request.start_layer)
    method.validate(request.kind)

    torch.manual_seed(args.seed)
    lm = load_model(args.model, args.model_path, seed=args.seed)
    inputs = lm.synthetic_prompt(batch_size=1, seed=args.seed)
    check_positions(lm, inputs.total_length, generation.max_new_tokens)
    plan = None
    if args.method != "h2o":
        plan = request.resolve(lm.args, args.audio_tokens or inputs.audio_length, args.text_tokens or inputs.text_length)
    report = run_comparison(lm, inputs, plan, method, generation,
                            _token_progress("[run] generating", generation.max_new_tokens))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


# --------------------------------------------------------------------------------------------- generate


def check_request_limits(manifest, rows: int, prompt_tokens: int, max_new_tokens: int) -> None:
    """A request against what the export was built to serve (manifest.limits)."""
    limits = manifest.limits
    if rows > limits.max_batch:
        raise InvalidOption(f"--num-beams x batch = {rows} rows, but this export serves at most {limits.max_batch} "
                            f"(batch x beams); re-export with --max-batch {rows} or use fewer beams")
    if max_new_tokens > limits.max_new_tokens:
        raise InvalidOption(f"--max-new-tokens {max_new_tokens} exceeds this export's decode budget of "
                            f"{limits.max_new_tokens}; re-export with --max-new-tokens {max_new_tokens} or ask for fewer")
    limit = manifest.model.args.max_position_embeddings
    if prompt_tokens + max_new_tokens > limit:
        raise InvalidOption(f"--max-new-tokens {max_new_tokens}: the {prompt_tokens}-token prompt plus the new tokens "
                            f"passes the model's {limit} positions; pass at most {max(limit - prompt_tokens, 0)}")


def _audio_embeds_file(path: str):
    import numpy as np

    if not os.path.isfile(path):
        raise InvalidOption(f"--audio-embeds {path}: no such file; pass a .npy file of embeddings [N, hidden_size]")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidOption(f"--audio-embeds {path} is not a .npy array ({type(exc).__name__}); save the embeddings "
                            "with numpy.save") from None


def _stats_lines(result) -> list[str]:
    s = result.stats
    lines = [f"[generate] {s.backend}: {s.chunking}; {s.audio_tokens} audio + {s.prefix_tokens + s.suffix_tokens} text "
             f"tokens; audio tokens per layer {s.audio_tokens_per_layer}"]
    rtf = "" if s.real_time_factor is None else f", real-time factor {s.real_time_factor:.3f}"
    lines.append(f"[generate] encode {s.encode_ms:.1f} ms, prefill {s.prefill_ms:.1f} ms, decode {s.decode_ms:.1f} ms "
                 f"({s.new_tokens} tokens, {s.tokens_per_second:.1f} tokens/s, stopped at {s.stopped}){rtf}")
    lines.append(f"[generate] decoder prefill FLOPs cut {s.flops_cut:.1%}; KV cache {s.kv_bytes:,} bytes vs "
                 f"{s.kv_bytes_full:,} unmerged ({s.kv_bytes_full / max(s.kv_bytes, 1):.2f}x smaller)")
    return lines


def cmd_generate(args) -> int:
    """Audio file + prompt -> text through an export directory (audio encoder -> prefill -> decode), with the
    PyTorch reference beside it only when --compare-torch asks for it."""
    from fastadasp.core.manifest import Manifest
    from fastadasp.runtime.pipeline import Pipeline, open_runner

    from fastadasp.runtime.generate import GenerationConfig

    manifest = Manifest.load(args.export_dir)
    max_new = manifest.limits.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens
    config = GenerationConfig(max_new_tokens=max_new, num_beams=args.num_beams)
    config.validate()
    check_request_limits(manifest, config.num_beams, 0, max_new)
    if args.audio is None and args.audio_embeds is None:
        raise InvalidOption("pass the audio: --audio FILE (or --audio-embeds FILE.npy for a model exported without an "
                            "audio encoder)")
    if args.compare_torch and args.backend == "torch":
        raise InvalidOption("--compare-torch runs the PyTorch reference beside the export: use it with --backend auto, "
                            "tensorrt or onnxruntime")
    embeds = _audio_embeds_file(args.audio_embeds) if args.audio_embeds is not None else None
    directory = Path(args.export_dir)
    pipe = Pipeline(directory, manifest, open_runner(directory, manifest, args.backend, args.model_path))
    request = dict(prompt=args.prompt, max_new_tokens=max_new, num_beams=config.num_beams,
                   on_step=None if args.json else _token_progress("[generate] decoding", max_new))
    if embeds is not None:
        result = pipe.generate(audio_embeds=embeds, **request)
    else:
        result = pipe.generate(args.audio, **request)
    report = result.to_dict()
    identical = True
    if args.compare_torch:
        reference = Pipeline(directory, manifest, open_runner(directory, manifest, "torch", args.model_path))
        request["on_step"] = None if args.json else _token_progress("[generate] PyTorch reference", max_new)
        ref = reference.generate(audio_embeds=embeds, **request) if embeds is not None else \
            reference.generate(args.audio, **request)
        identical = ref.tokens == result.tokens
        report["torch_reference"] = {"text": ref.text, "tokens": ref.tokens, "identical": identical}
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(result.text)
        say(f"[generate] {result.stats.backend_reason}")
        for line in _stats_lines(result):
            say(line)
        if args.compare_torch:
            say("[generate] PyTorch reference: identical tokens" if identical else
                f"[generate] PyTorch reference DIFFERS: {ref.tokens} (a near-tied merge selection can flip between "
                "runtimes; see docs/architecture.md)")
    return 0 if identical else 1


# --------------------------------------------------------------------------------------------- select-layer / models


def cmd_select_layer(args) -> int:
    from fastadasp.runtime.calibrate import select_sparse_layer

    if not 0.0 < args.ratio < 1.0:
        raise InvalidOption(f"--ratio must be in (0, 1), got {args.ratio}")
    if args.calibration_samples < 1:
        raise InvalidOption(f"--calibration-samples must be >= 1, got {args.calibration_samples}")
    lm = load_model(args.model, args.model_path)
    calibration = [lm.synthetic_prompt(batch_size=1, seed=s) for s in range(args.calibration_samples)]
    result = select_sparse_layer(lm, calibration, args.ratio)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for layer, score in sorted(result.scores.items()):
            print(f"layer {layer:3d}  TE {score:.4f}")
        print(f"selected layer {result.selected_layer} (smallest transfer entropy)")
    return 0


def cmd_build_plugin(args) -> int:
    from dataclasses import asdict

    from fastadasp.plugins import build_plugin

    build = build_plugin(args.build_dir, force=args.force, progress=say)
    if args.json:
        print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(build).items()}, indent=2))
    else:
        print(build.library)
        print(f"sha256 {build.sha256} ({'reused' if build.reused else f'built in {build.seconds:.1f}s'})")
    return 0


def plugin_libraries(mode: str) -> tuple[str, ...]:
    """The plugin library engines are built with: `on` builds it or fails, `auto` falls back to the
    standard-op function body with one line saying why, `off` never uses it."""
    if mode == "off":
        return ()
    from fastadasp.plugins import PluginBuildError, build_plugin

    try:
        build = build_plugin(progress=say)
    except PluginBuildError as exc:
        if mode == "on":
            raise
        say(f"[plugin] not used (WeightedMerge nodes build from their standard-op body): {exc}")
        return ()
    say(f"[plugin] {'reused' if build.reused else 'built'} {build.library} (sha256 {build.sha256[:12]})")
    return (str(build.library),)


def cmd_models(args) -> int:
    from fastadasp.models.registry import get_spec, model_names

    for name in model_names():
        print(f"{name:18s} {get_spec(name).description}")
    return 0


# --------------------------------------------------------------------------------------------- export-engine


def check_output_dir(out: str) -> Path:
    """--out must be a directory path we can create or replace."""
    path = Path(out).absolute()
    if path.exists() and not path.is_dir():
        raise InvalidOption(f"--out {out} is an existing file; pass a directory path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InvalidOption(f"--out {out}: {parent} is a file, not a directory; pass a path under a directory")
            if not os.access(parent, os.W_OK):
                raise InvalidOption(f"--out {out}: {parent} is not writable; pass a directory you can write to")
            break
    return path


def cmd_export(args) -> int:
    from fastadasp.core.files import replaced_directory
    from fastadasp.core.manifest import AudioTokenRange, ServingLimits
    from fastadasp.engines.pipeline import EngineBuildConfig, build_engines_for_export
    from fastadasp.exporter.export import ExportConfig, export_model

    # Every option is checked before the model is built or a file is written.
    request = plan_request(args)
    try:
        token_range = AudioTokenRange.parse(args.audio_tokens_range)
        limits = ServingLimits(args.max_batch, args.max_text_tokens, args.max_new_tokens)
    except ValueError as exc:
        option = "--audio-tokens-range" if "MIN" in str(exc) else ""
        raise InvalidOption(f"{option} {exc}".strip()) from None
    export_config = ExportConfig(args.dtype, args.opset, args.position_policy, token_range, limits=limits)
    export_config.validate()
    engine_config = EngineBuildConfig(args.max_batch, args.max_text_tokens, args.max_new_tokens,
                                      args.compute_capability,
                                      cache_dir=Path(args.engine_cache) if args.engine_cache else None)
    engine_config.validate()
    out = check_output_dir(args.out or f"engines-{args.model}-{request.kind}")
    check_model_options(args.model, args.model_path)

    lm = load_model(args.model, args.model_path)
    plan = request.resolve(lm.args, token_range.opt, 64)
    say(f"[plan] {plan.schedule.kind} from layer {plan.schedule.start_layer}: decoder prefill FLOPs cut "
        f"{plan.flops_reduction:.1%} at {token_range.opt} audio tokens; audio tokens per layer {plan.tokens_per_layer}")
    with replaced_directory(out) as staging:
        manifest = export_model(lm, plan.schedule, staging, export_config, plan=plan, progress=say)
        if args.skip_engines:
            say("[engines] skipped (--skip-engines)")
        else:
            engine_config = dataclasses.replace(engine_config, plugin_libraries=plugin_libraries(args.plugin))
            build_engines_for_export(staging, manifest, engine_config)
    say(f"[export] complete: {out}")
    return 0

