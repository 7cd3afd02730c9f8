"""Full vs reduced generation on one input, side by side: what `fastadasp run` prints."""

from __future__ import annotations

import torch

from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate


def run_comparison(lm, args, plan_for_audio_tokens) -> dict:
    inputs = lm.synthetic_prompt(batch_size=1, seed=args.seed)
    plan = plan_for_audio_tokens(args.audio_tokens or inputs.audio_length, args.text_tokens or inputs.text_length)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    full_backend = TorchBackend(lm.decoder)
    reduced_backend = _reduced_backend(lm, plan, args, inputs)
    full = generate(full_backend, inputs, config)
    reduced = generate(reduced_backend, inputs, config)
    full_tokens, reduced_tokens = full.sequences[0].tolist(), reduced.sequences[0].tolist()
    agree = sum(a == b for a, b in zip(full_tokens, reduced_tokens))
    spans = plan.schedule.span_lengths(inputs.audio_length)
    return {
        "model": lm.name,
        "method": getattr(args, "method", "weighted"),
        "audio_tokens": inputs.audio_length,
        "text_tokens": inputs.text_length,
        "plan": plan.to_dict(),
        "audio_tokens_per_layer": spans,
        "kv_length_per_layer": [inputs.text_length + n for n in spans[:-1]],
        "kv_bytes_full": full_backend.cache.valid_nbytes(),
        "kv_bytes_reduced": reduced_backend.cache.valid_nbytes(),
        "first_token_logits_max_abs_diff": float((full.prefill.logits - reduced.prefill.logits).abs().max()),
        "full_tokens": full_tokens,
        "reduced_tokens": reduced_tokens,
        "token_agreement": agree / max(len(full_tokens), 1),
    }


def _reduced_backend(lm, plan, args, inputs) -> TorchBackend:
    method = getattr(args, "method", "weighted")
    if method == "h2o":  # decode-time eviction instead of prefill merging
        from fastadasp.reduction.h2o import H2OPolicy

        budget = args.kv_budget or max(2, inputs.total_length // 2)
        recent = args.recent_window if args.recent_window is not None else budget // 4
        return TorchBackend(lm.decoder, None, kv_policy=H2OPolicy(budget, recent))
    from fastadasp.reduction.baselines import SPAN_REDUCERS

    generator = torch.Generator().manual_seed(args.seed)
    return TorchBackend(lm.decoder, plan.schedule, position_policy=args.position_policy,
                        reducer=SPAN_REDUCERS[method], generator=generator)


def format_report(r: dict) -> str:
    p = r["plan"]
    lines = [
        f"model {r['model']}: {r['audio_tokens']} audio + {r['text_tokens']} text tokens, method {r['method']}",
        f"schedule {p['schedule']} from layer {p['start_layer']}, base ratio {p['base_ratio']:.4f}, "
        f"prefill FLOPs cut {p['flops_reduction']:.1%}",
        f"audio tokens per layer: {r['audio_tokens_per_layer']}",
        f"KV bytes after decode: full {r['kv_bytes_full']:,}  reduced {r['kv_bytes_reduced']:,}  "
        f"({r['kv_bytes_full'] / max(r['kv_bytes_reduced'], 1):.2f}x smaller)",
        f"full    tokens: {r['full_tokens']}",
        f"reduced tokens: {r['reduced_tokens']}",
        f"token agreement {r['token_agreement']:.0%} (random weights: agreement says little about quality)",
    ]
    return "\n".join(lines)
