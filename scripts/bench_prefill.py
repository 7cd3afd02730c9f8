"""ONNX Runtime CPU prefill latency: full vs reduced graphs, side by side, against the FLOPs ratio.

Real-shaped decoder (SmolLM2-135M layout: 30 layers, d 576, 9 heads / 3 KV heads, SwiGLU 1536) with random
weights (latency does not depend on weight values), >= 1500 audio tokens. Runs alternate full / reduced so
machine noise hits both alike; medians are compared. Writes JSON + Markdown (+ PNG when matplotlib exists).

    python scripts/bench_prefill.py --audio-tokens 1500 --flops-target 0.5 --reps 7 --out bench/prefill
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch


def smollm2_like():
    from transformers import LlamaConfig, LlamaForCausalLM

    from fastadasp.models.llama import DecoderOnlyLM

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return DecoderOnlyLM(LlamaForCausalLM(config).eval(), name="smollm2-135m-layout")


def session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--audio-tokens", type=int, default=1500)
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--flops-target", type=float, default=0.5)
    p.add_argument("--schedule", default="decay", choices=("constant", "decay", "sparse"))
    p.add_argument("--start-layer", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/prefill")
    args = p.parse_args(argv)

    from fastadasp.exporter.graphs import GraphSpec, build_prefill
    from fastadasp.reduction.schedule import plan_for_flops_target

    lm = smollm2_like()
    plan = plan_for_flops_target(lm.args, args.schedule, args.start_layer, args.flops_target,
                                 args.audio_tokens, args.text_tokens)
    print(f"[bench] plan: {plan.schedule.kind} from layer {args.start_layer}, FLOPs cut {plan.flops_reduction:.1%}; "
          f"audio tokens per layer {plan.tokens_per_layer[0]} -> {plan.tokens_per_layer[-1]}")
    workdir = Path(tempfile.mkdtemp(prefix="fastadasp-bench-"))
    sessions = {}
    for label, ratios in (("full", [0.0] * lm.args.num_layers), ("reduced", list(plan.schedule.ratios))):
        path = workdir / f"{label}.onnx"
        print(f"[bench] exporting {label} prefill graph...")
        onnx.save(build_prefill(lm.decoder, GraphSpec(tuple(ratios), max_audio_tokens=args.audio_tokens)), path)
        sessions[label] = session(str(path), args.threads)
    rng = np.random.default_rng(0)
    prefix_len = args.text_tokens * 3 // 4
    feed = {
        "prefix_ids": rng.integers(0, 49151, (1, prefix_len)).astype(np.int64),
        "audio_embeds": (rng.standard_normal((1, args.audio_tokens, 576)) * 0.02).astype(np.float32),
        "suffix_ids": rng.integers(0, 49151, (1, args.text_tokens - prefix_len)).astype(np.int64),
    }
    for label, s in sessions.items():  # warm-up: allocator and kernel selection
        s.run(["logits"], feed)
    times: dict[str, list[float]] = {"full": [], "reduced": []}
    for rep in range(args.reps):
        for label in ("full", "reduced") if rep % 2 == 0 else ("reduced", "full"):
            start = time.perf_counter()
            sessions[label].run(["logits"], feed)
            times[label].append(time.perf_counter() - start)
        print(f"[bench] rep {rep + 1}/{args.reps}: full {times['full'][-1]:.3f}s reduced {times['reduced'][-1]:.3f}s")
    med = {k: statistics.median(v) for k, v in times.items()}
    flops_ratio = plan.flops_full / plan.flops_reduced
    speedup = med["full"] / med["reduced"]
    report = {
        "model": lm.name,
        "audio_tokens": args.audio_tokens,
        "text_tokens": args.text_tokens,
        "schedule": plan.schedule.kind,
        "start_layer": args.start_layer,
        "flops_target": args.flops_target,
        "flops_reduction": plan.flops_reduction,
        "flops_ratio": flops_ratio,
        "median_seconds": med,
        "all_seconds": times,
        "speedup": speedup,
        "speedup_over_flops_ratio": speedup / flops_ratio,
        "threads": args.threads,
        "reps": args.reps,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        f"# Prefill latency, ONNX Runtime CPU ({args.threads} threads)",
        "",
        f"{lm.name}, {args.audio_tokens} audio + {args.text_tokens} text tokens, {plan.schedule.kind} schedule "
        f"from layer {args.start_layer}, {args.reps} alternating reps (medians).",
        "",
        "| graph | median s | FLOPs |",
        "|---|---|---|",
        f"| full | {med['full']:.3f} | {plan.flops_full:.3e} |",
        f"| reduced | {med['reduced']:.3f} | {plan.flops_reduced:.3e} |",
        "",
        f"speedup **{speedup:.2f}x**; the FLOPs cut allows at most {flops_ratio:.2f}x, so the merge delivers "
        f"{speedup / flops_ratio:.0%} of what removing those FLOPs can give",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.boxplot([times["full"], times["reduced"]])
        ax.set_xticks([1, 2], ["full", f"reduced (-{plan.flops_reduction:.0%} FLOPs)"])
        ax.set_ylabel("prefill seconds")
        ax.set_title(f"{args.audio_tokens} audio tokens: {speedup:.2f}x (FLOPs {flops_ratio:.2f}x)")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except ImportError:
        print("[bench] matplotlib not installed: no PNG (pip install matplotlib)")
    print("\n".join(md))
    return report


if __name__ == "__main__":
    main()
