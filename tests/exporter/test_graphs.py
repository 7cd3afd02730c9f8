"""Exported graphs run by ONNX Runtime against Hugging Face (ratio 0) and the PyTorch reduced reference."""

import shutil
import subprocess

import onnx
import pytest
import torch

from fastadasp.exporter.graphs import GraphSpec, build_decode, build_prefill
from fastadasp.models.llama import DecoderOnlyLM
from fastadasp.reduction.schedule import make_schedule, span_lengths_for_ratios
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate
from fastadasp.core.prompt import PromptInputs
from support import TINY_PRESETS, MarginRecorder, hf_reference

FP32_TOL = 1e-4


def _zero(lm):
    return [0.0] * lm.args.num_layers


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_ratio_zero_graphs_match_hugging_face(tiny, export_graphs, name):
    lm = tiny(name)
    backend = export_graphs(lm, _zero(lm))
    inputs = lm.synthetic_prompt(batch_size=2, seed=7)
    ref = hf_reference(lm, inputs)
    result = backend.prefill(inputs, max_new_tokens=32)
    torch.testing.assert_close(result.logits, ref.last_logits(), rtol=FP32_TOL, atol=FP32_TOL)
    ours = generate(backend, inputs, GenerationConfig(max_new_tokens=32)).sequences
    expected = ref.generate(max_new_tokens=32, num_beams=1, pad_token_id=0)
    assert ours.shape[1] == 32
    assert ours.tolist() == expected.tolist()


def _reduced_case(lm, seed, policy, ratios):
    """A request whose m-th-edge margins are all > 1e-4 under the reference (re-drawn otherwise)."""
    for attempt in range(8):
        inputs = lm.synthetic_prompt(batch_size=2, seed=seed + 100 * attempt)
        recorder = MarginRecorder()
        reference = TorchBackend(lm.decoder, ratios, position_policy=policy, reducer=recorder)
        result = reference.prefill(inputs, max_new_tokens=8)
        if recorder.min_margin > 1e-4:
            return inputs, reference, result
    pytest.fail("could not draw a request without near-ties at the m-th edge")


@pytest.mark.parametrize("name", TINY_PRESETS)
@pytest.mark.parametrize("policy", ["reference", "first"])
def test_reduced_prefill_matches_torch_reference(tiny, export_graphs, name, policy):
    lm = tiny(name)
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    inputs, reference, expected = _reduced_case(lm, 11, policy, schedule.ratios)
    backend = export_graphs(lm, schedule.ratios, policy)
    result = backend.prefill(inputs, max_new_tokens=8)
    for layer, kept in expected.kept.items():  # discrete selection first, then values
        assert result.kept[layer].tolist() == kept.tolist(), f"layer {layer} picked different edges"
    torch.testing.assert_close(result.logits, expected.logits, rtol=FP32_TOL, atol=FP32_TOL)
    spans = span_lengths_for_ratios(schedule.ratios, inputs.audio_length)
    assert backend.cache.lengths == [inputs.text_length + n for n in spans[:-1]]
    for i in range(lm.args.num_layers):
        torch.testing.assert_close(backend.cache.view(i)[0], reference.cache.view(i)[0], rtol=FP32_TOL, atol=FP32_TOL)


def test_one_graph_serves_many_audio_lengths(tiny, export_graphs):
    lm = tiny("tiny-llama")
    schedule = make_schedule("constant", lm.args.num_layers, 0, 0.4)
    backend = export_graphs(lm, schedule.ratios)
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 17, 64, 301):
        audio = torch.randn(1, n, lm.args.hidden_size, generator=gen) * 0.02
        inputs = PromptInputs(torch.tensor([[1, 2, 3]]), audio, torch.tensor([[4, 5]]))
        expected = TorchBackend(lm.decoder, schedule).prefill(inputs, 1)
        result = backend.prefill(inputs, 1)
        assert result.span_lengths == expected.span_lengths
        assert backend.cache.lengths == [5 + s for s in expected.span_lengths[:-1]]
        torch.testing.assert_close(result.logits, expected.logits, rtol=FP32_TOL, atol=FP32_TOL)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_reduced_decode_matches_torch_and_writes_in_place(tiny, export_graphs, num_beams):
    lm = tiny("tiny-wavllm")  # exercises lora_scale in both graphs
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    backend = export_graphs(lm, schedule.ratios)
    inputs = lm.synthetic_prompt(batch_size=2, seed=3)
    config = GenerationConfig(max_new_tokens=32, num_beams=num_beams)
    ours = generate(backend, inputs, config).sequences
    expected = generate(TorchBackend(lm.decoder, schedule), inputs, config).sequences
    assert ours.tolist() == expected.tolist()
    # one more step: the cache buffers keep their memory and gain exactly one entry per layer
    pointers = [layer.key.data_ptr() for layer in backend.cache.layers]
    lengths = backend.cache.lengths
    rows = backend.cache.batch_size
    backend.decode(torch.ones(rows, 1, dtype=torch.long), torch.full((rows, 1), inputs.total_length + 40))
    assert [layer.key.data_ptr() for layer in backend.cache.layers] == pointers
    assert backend.cache.lengths == [n + 1 for n in lengths]
    assert all(bool(layer.key[:, :, n].abs().sum() > 0) for layer, n in zip(backend.cache.layers, lengths))


def test_non_preset_gqa_config_exports(tmp_path, export_graphs):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=96, intermediate_size=136, num_hidden_layers=4,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=24, max_position_embeddings=512)
    lm = DecoderOnlyLM(Qwen2ForCausalLM(config).eval(), name="qwen2-gqa")
    schedule = make_schedule("constant", 4, 1, 0.3)
    inputs, reference, expected = _reduced_case(lm, 5, "reference", schedule.ratios)
    backend = export_graphs(lm, schedule.ratios)
    result = backend.prefill(inputs, 4)
    torch.testing.assert_close(result.logits, expected.logits, rtol=FP32_TOL, atol=FP32_TOL)


def test_fp16_graph_selection_agreement(tiny, export_graphs):
    """fp16 engines can legitimately flip near-tied edges; report and bound the agreement with fp32."""
    lm = tiny("tiny-qwen2-audio")
    schedule = make_schedule("constant", lm.args.num_layers, 1, 0.3)
    backend = export_graphs(lm, schedule.ratios, dtype="fp16")
    agree = total = 0
    for seed in range(4):
        inputs = lm.synthetic_prompt(batch_size=2, seed=seed)
        expected = TorchBackend(lm.decoder, schedule).prefill(inputs, 1)
        result = backend.prefill(inputs, 1)
        layer = min(expected.kept)
        agree += int((result.kept[layer] == expected.kept[layer]).all(dim=1).sum())
        total += inputs.batch_size
        assert torch.isfinite(result.logits).all()
    print(f"fp16 first-merge-layer selection agreement with fp32: {agree}/{total}")
    assert agree >= total // 2


def _export_pair(lm, tmp_path):
    spec = GraphSpec(tuple(make_schedule("decay", lm.args.num_layers, 1, 0.5).ratios))
    paths = []
    for role, builder in (("prefill", build_prefill), ("decode", build_decode)):
        path = tmp_path / f"{role}.onnx"
        onnx.save(builder(lm.decoder, spec), path)
        paths.append(path)
    return paths


def test_onnx_checker_accepts_graphs(tiny, tmp_path):
    for path in _export_pair(tiny("tiny-wavllm"), tmp_path):
        onnx.checker.check_model(str(path), full_check=True)


def test_polygraphy_inspects_graphs(tiny, tmp_path):
    if shutil.which("polygraphy") is None:  # a dev dependency; only a partial install lacks it
        pytest.skip("polygraphy not installed (pip install polygraphy)")
    for path in _export_pair(tiny("tiny-wavllm"), tmp_path):
        out = subprocess.run(["polygraphy", "inspect", "model", str(path)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "present.0.key" in out.stdout
