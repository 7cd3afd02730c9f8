"""Full vs reduced generation on one input, side by side: what `fastadasp run` prints."""

from __future__ import annotations

from fastadasp.core.prompt import PromptInputs
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate
from fastadasp.runtime.methods import MethodConfig, reduced_backend


def run_comparison(lm, inputs: PromptInputs, plan, method: MethodConfig, generation: GenerationConfig,
                   on_step=None) -> dict:
    """plan: the merge plan for span methods (None for h2o, which merges nothing)."""
    full_backend = TorchBackend(lm.decoder)
    reduced = reduced_backend(lm.decoder, None if plan is None else plan.schedule, method, inputs.total_length)
    full = generate(full_backend, inputs, generation, on_step)
    out = generate(reduced, inputs, generation, on_step)
    full_tokens, reduced_tokens = full.sequences[0].tolist(), out.sequences[0].tolist()
    agree = sum(a == b for a, b in zip(full_tokens, reduced_tokens))
    report = {
        "model": lm.name,
        "method": method.method,
        "audio_tokens": inputs.audio_length,
        "text_tokens": inputs.text_length,
        "kv_bytes_full": full_backend.cache.valid_nbytes(),
        "kv_bytes_reduced": reduced.cache.valid_nbytes(),
        "kv_length_per_layer": reduced.cache.lengths,
        "first_token_logits_max_abs_diff": float((full.prefill.logits - out.prefill.logits).abs().max()),
        "full_tokens": full_tokens,
        "reduced_tokens": reduced_tokens,
        "token_agreement": agree / max(len(full_tokens), 1),
    }
    if plan is not None:
        report["plan"] = plan.to_dict()
        report["audio_tokens_per_layer"] = plan.schedule.span_lengths(inputs.audio_length)
    else:
        budget, recent = method.h2o_sizes(inputs.total_length)
        report["h2o"] = {"kv_budget": budget, "recent_window": recent}
    return report


def format_report(r: dict) -> str:
    lines = [f"model {r['model']}: {r['audio_tokens']} audio + {r['text_tokens']} text tokens, method {r['method']}"]
    if "plan" in r:
        p = r["plan"]
        lines += [
            f"schedule {p['schedule']} from layer {p['start_layer']}, base ratio {p['base_ratio']:.4f}, "
            f"prefill FLOPs cut {p['flops_reduction']:.1%}",
            f"audio tokens per layer: {r['audio_tokens_per_layer']}",
        ]
    else:
        h = r["h2o"]
        lines.append(f"H2O decode-time eviction: {h['kv_budget']} KV entries kept per layer "
                     f"({h['recent_window']} most recent); prefill runs on every token, nothing is merged")
    lines += [
        f"KV bytes after decode: full {r['kv_bytes_full']:,}  reduced {r['kv_bytes_reduced']:,}  "
        f"({r['kv_bytes_full'] / max(r['kv_bytes_reduced'], 1):.2f}x smaller)",
        f"full    tokens: {r['full_tokens']}",
        f"reduced tokens: {r['reduced_tokens']}",
        f"token agreement {r['token_agreement']:.0%} (random weights: agreement says little about quality)",
    ]
    return "\n".join(lines)
