"""Decode throughput with the compacted KV cache: ONNX Runtime CPU, full vs reduced export, plus Hugging Face
`generate` (full tokens) at the same beam width — side by side in one run, medians of alternating reps.

Reports tokens/s, the KV bytes each decode step reads, and the bytes-read limit
(weights + full KV) / (weights + reduced KV) the reduced speedup is judged against. Random weights in the
SmolLM2-135M layout (decode speed does not depend on weight values).

    python scripts/bench_decode.py --audio-tokens 1500 --flops-target 0.5 --num-beams 5 --new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_prefill import smollm2_like


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--audio-tokens", type=int, default=1500)
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--flops-target", type=float, default=0.5)
    p.add_argument("--schedule", default="decay")
    p.add_argument("--start-layer", type=int, default=2)
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--out", default="bench/decode")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fastadasp.core.manifest import AudioTokenRange
    from fastadasp.exporter.export import ExportConfig, export_model
    from fastadasp.reduction.schedule import make_schedule, plan_for_flops_target
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fastadasp.runtime.generate import GenerationConfig, generate
    from fastadasp.core.prompt import PromptInputs, synthetic_token_ids

    lm = smollm2_like()
    a = lm.args
    plan = plan_for_flops_target(a, args.schedule, args.start_layer, args.flops_target,
                                 args.audio_tokens, args.text_tokens)
    work = Path(tempfile.mkdtemp(prefix="fastadasp-decode-"))
    token_range = AudioTokenRange(1, args.audio_tokens, args.audio_tokens)
    backends = {}
    for label, schedule in (("full", make_schedule("constant", a.num_layers, 0, 0.0)), ("reduced", plan.schedule)):
        print(f"[bench] exporting {label} graphs...")
        export_model(lm, schedule, work / label, ExportConfig(audio_tokens=token_range, include_audio_encoder=False),
                     progress=lambda _: None)
        backends[label] = OnnxRuntimeBackend.from_export(work / label, threads=args.threads, spin=True)

    gen = torch.Generator().manual_seed(0)
    prefix_len = args.text_tokens * 3 // 4
    inputs = PromptInputs(
        synthetic_token_ids(a.vocab_size, 1, prefix_len, gen),
        torch.randn(1, args.audio_tokens, a.hidden_size, generator=gen) * 0.02,
        synthetic_token_ids(a.vocab_size, 1, args.text_tokens - prefix_len, gen),
    )
    steps = args.new_tokens
    config = GenerationConfig(max_new_tokens=steps, num_beams=args.num_beams)
    one = GenerationConfig(max_new_tokens=1, num_beams=args.num_beams)

    def ours(label):
        """Seconds spent in decode steps (prefill excluded), and the decode steps taken."""
        backend = backends[label]
        spent, calls = [0.0], [0]
        decode = backend.decode

        def timed(*a, **kw):
            start = time.perf_counter()
            try:
                return decode(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - start
                calls[0] += 1

        backend.decode = timed
        try:
            generate(backend, inputs, config)
        finally:
            del backend.decode  # back to the class method
        return spent[0], calls[0]

    def hugging_face():
        """Decode seconds from the first to the last stopping-criteria call (each follows one forward)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Clock(StoppingCriteria):
            def __init__(self):
                self.stamps = []

            def __call__(self, input_ids, scores, **kw):
                self.stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        clock = Clock()
        embeds = inputs.embeds(lm.decoder.embed, torch.float32)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        with torch.no_grad():
            lm.hf_model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, num_beams=args.num_beams,
                                 pad_token_id=0, max_new_tokens=steps, min_new_tokens=steps,
                                 stopping_criteria=StoppingCriteriaList([clock]))
        return clock.stamps[-1] - clock.stamps[0], len(clock.stamps) - 1

    runners = {"full": lambda: ours("full"), "reduced": lambda: ours("reduced")}
    if not args.skip_hf:
        runners["hf_generate_full"] = hugging_face
    for label, run in runners.items():  # warm-up: allocators, kernel selection, HF's first-call setup
        print(f"[bench] warm-up {label}...")
        run()
    seconds = {k: [] for k in runners}
    tokens = {}
    for rep in range(args.reps):
        order = list(runners) if rep % 2 == 0 else list(reversed(runners))
        for label in order:
            s, n = runners[label]()
            seconds[label].append(s)
            tokens[label] = n
        print(f"[bench] rep {rep + 1}/{args.reps}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in seconds.items()))

    med = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: tokens[k] / med[k] for k in med}  # decode steps (forwards of every beam) per second
    weights = sum(t.numel() * t.element_size() for t in lm.hf_model.parameters())
    kv = {label: backends[label].cache.valid_nbytes() for label in ("full", "reduced")}
    limit = (weights + kv["full"]) / (weights + kv["reduced"])
    speed = rate["reduced"] / rate["full"]
    report = {
        "model": lm.name, "audio_tokens": args.audio_tokens, "text_tokens": args.text_tokens,
        "num_beams": args.num_beams, "new_tokens": steps, "flops_reduction": plan.flops_reduction,
        "kv_bytes_after_decode": kv, "kv_ratio": kv["full"] / kv["reduced"], "weight_bytes": weights,
        "bytes_read_limit": limit, "median_decode_seconds": med, "decode_tokens_per_second": rate,
        "reduced_over_full": speed, "reduced_over_full_vs_limit": speed / limit,
        "reduced_over_hf_generate": rate["reduced"] / rate["hf_generate_full"] if "hf_generate_full" in rate else None,
        "all_seconds": seconds, "threads": args.threads, "reps": args.reps,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [f"| {k} | {med[k]:.2f} | {rate[k]:.1f} |" for k in med]
    md = [
        f"# Decode throughput, CPU ({args.threads} threads), beam {args.num_beams}",
        "",
        f"{lm.name}, {args.audio_tokens} audio + {args.text_tokens} text tokens, {plan.schedule.kind} schedule at "
        f"{plan.flops_reduction:.0%} prefill FLOPs cut, {steps} new tokens, {args.reps} alternating reps (medians).",
        "",
        "| runtime | decode s | decode steps/s (each step: one token for every beam) |",
        "|---|---|---|",
        *rows,
        "",
        f"KV bytes: full {kv['full']:,} / reduced {kv['reduced']:,} = {report['kv_ratio']:.2f}x smaller",
        f"reduced / full decode: **{speed:.2f}x**; reading {limit:.3f}x fewer bytes per step allows about "
        f"{limit:.2f}x, so decode reaches {speed / limit:.0%} of that limit",
    ]
    if report["reduced_over_hf_generate"] is not None:
        md.append(f"reduced (ONNX Runtime) / Hugging Face generate (full tokens): **{report['reduced_over_hf_generate']:.2f}x** faster")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return report


if __name__ == "__main__":
    main()
