"""Exported graphs run by ONNX Runtime against Hugging Face (ratio 0) and the PyTorch reduced reference;
node names by scope."""

import re
import shutil
import subprocess

import onnx
import pytest
import torch

from export_checks import kept_from_similarities, mth_edge_margin, reduced_case, span_similarities
from fastadasp.core.prompt import PromptInputs
from fastadasp.exporter.graphs import TOP_SCOPES, GraphSpec, build_decode, build_prefill
from fastadasp.models.llama import DecoderOnlyLM
from fastadasp.reduction.merge import num_merged
from fastadasp.reduction.schedule import make_schedule, span_lengths_for_ratios
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate
from support import TINY_PRESETS, hf_reference

FP32_TOL = 1e-4
# Each test runs its PyTorch references before ONNX Runtime: ONNX Runtime's worker threads keep spinning after
# a run and slow the next PyTorch ops on a small machine by two orders of magnitude.


def _zero(lm):
    return [0.0] * lm.args.num_layers


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_ratio_zero_graphs_match_hugging_face(tiny, export_graphs, name):
    lm = tiny(name)
    inputs = lm.synthetic_prompt(batch_size=2, seed=7)
    ref = hf_reference(lm, inputs)
    ref_logits = ref.last_logits()
    expected = ref.generate(max_new_tokens=32, num_beams=1, pad_token_id=0)
    backend = export_graphs(lm, _zero(lm))
    result = backend.prefill(inputs, max_new_tokens=32)
    torch.testing.assert_close(result.logits, ref_logits, rtol=FP32_TOL, atol=FP32_TOL)
    ours = generate(backend, inputs, GenerationConfig(max_new_tokens=32)).sequences
    assert ours.shape[1] == 32
    assert ours.tolist() == expected.tolist()


@pytest.mark.parametrize("name", TINY_PRESETS)
@pytest.mark.parametrize("policy", ["reference", "first"])
def test_reduced_prefill_matches_torch_reference(tiny, export_graphs, name, policy):
    lm = tiny(name)
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    inputs, reference, expected = reduced_case(lm, 11, policy, schedule.ratios)
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
    gen = torch.Generator().manual_seed(0)
    cases = []
    for n in (1, 2, 3, 17, 64, 301):
        audio = torch.randn(1, n, lm.args.hidden_size, generator=gen) * 0.02
        inputs = PromptInputs(torch.tensor([[1, 2, 3]]), audio, torch.tensor([[4, 5]]))
        cases.append((inputs, TorchBackend(lm.decoder, schedule).prefill(inputs, 1)))
    backend = export_graphs(lm, schedule.ratios)
    for inputs, expected in cases:
        result = backend.prefill(inputs, 1)
        assert result.span_lengths == expected.span_lengths
        assert backend.cache.lengths == [5 + s for s in expected.span_lengths[:-1]]
        torch.testing.assert_close(result.logits, expected.logits, rtol=FP32_TOL, atol=FP32_TOL)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_reduced_decode_matches_torch_and_writes_in_place(tiny, export_graphs, num_beams):
    lm = tiny("tiny-wavllm")  # exercises lora_scale in both graphs
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    inputs = lm.synthetic_prompt(batch_size=2, seed=3)
    config = GenerationConfig(max_new_tokens=32, num_beams=num_beams)
    expected = generate(TorchBackend(lm.decoder, schedule), inputs, config).sequences
    backend = export_graphs(lm, schedule.ratios)
    ours = generate(backend, inputs, config).sequences
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
    inputs, reference, expected = reduced_case(lm, 5, "reference", schedule.ratios)
    backend = export_graphs(lm, schedule.ratios)
    result = backend.prefill(inputs, 4)
    torch.testing.assert_close(result.logits, expected.logits, rtol=FP32_TOL, atol=FP32_TOL)


def test_fp16_graph_selects_like_fp32_wherever_the_margin_exceeds_the_fp16_error(tiny, export_graphs):
    """An fp16 graph computes the merge from fp16 keys, so it may legitimately flip edges the fp32 reference
    ranks within its keys' rounding error of each other, and nowhere else. Per sample and merge layer (in
    order, while all earlier layers agreed): err = max |s16 - s32| over the span's adjacent-key similarities,
    s16 from the fp16 graph's own cached keys, s32 from the reference's. An m-th-edge margin above 2 * err
    means no edge can cross the boundary, so the selections must be equal. Independently, the fp16 graph's
    selection must be the top-m of its own similarities wherever those have a margin above fp32 rounding."""
    lm = tiny("tiny-qwen2-audio")
    schedule = make_schedule("constant", lm.args.num_layers, 1, 0.3)
    references = []
    for seed in range(4):
        inputs = lm.synthetic_prompt(batch_size=2, seed=seed)
        reference = TorchBackend(lm.decoder, schedule)
        references.append((inputs, reference, reference.prefill(inputs, 1)))
    backend = export_graphs(lm, schedule.ratios, dtype="fp16")
    decided = flips = own_checked = 0
    for inputs, reference, expected in references:
        result = backend.prefill(inputs, 1)
        assert torch.isfinite(result.logits).all()
        spans = span_lengths_for_ratios(schedule.ratios, inputs.audio_length)
        P = inputs.prefix_ids.shape[1]
        agreed = torch.ones(inputs.batch_size, dtype=torch.bool)
        for layer in sorted(result.kept):
            m = num_merged(spans[layer], schedule.ratios[layer])
            s16 = span_similarities(backend.cache.view(layer)[0].float(), P, spans[layer])
            s32 = span_similarities(reference.cache.view(layer)[0], P, spans[layer])
            # The fp16 graph implements the merge on its own numbers.
            own = mth_edge_margin(s16, m) > 1e-5
            assert torch.equal(result.kept[layer][own], kept_from_similarities(s16, m)[own]), f"layer {layer}"
            own_checked += int(own.sum())
            # Against fp32: exact wherever the margin exceeds twice the measured similarity error.
            same = (result.kept[layer] == expected.kept[layer]).all(dim=1)
            err = (s16 - s32).abs().amax(dim=1)
            safe = agreed & (mth_edge_margin(s32, m) > 2 * err)
            assert same[safe].all(), f"layer {layer}: fp16 flipped an edge with margin > 2 x its rounding error"
            decided += int(safe.sum())
            flips += int((agreed & ~same).sum())
            agreed &= same
    # The checks above were not vacuous: most sample-layers are decided by their margin.
    assert own_checked >= 8 and decided >= 8, f"checked {own_checked} own, {decided} vs fp32 ({flips} flips)"


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


def test_node_names_are_unique_and_name_their_layer_and_module(tiny):
    lm = tiny("tiny-wavllm")  # prompt LoRA: every projection has a lora sub-scope too
    spec = GraphSpec(tuple(make_schedule("decay", lm.args.num_layers, 1, 0.5).ratios), "first")
    scoped = re.compile(r"^/(?:" + "|".join(re.escape(t) for t in TOP_SCOPES) + r")(?:\.(\d+))?/")
    weight = re.compile(r"^layers\.(\d+)\.(?:mlp\.)?(\w+)\.")
    for build, landmarks in (
        (build_prefill, ["/embed/Gather", "/layers.1/attn/q_proj/MatMul", "/layers.1/attn/q_proj/lora/MatMul",
                         "/layers.1/merge/WeightedMerge", "/layers.5/mlp/down_proj/MatMul", "/lm_head/MatMul"]),
        (build_decode, ["/rotary/Cos", "/layers.0/attn/kv_cache/ScatterElements", "/layers.5/attn/o_proj/MatMul",
                        "/lm_head/MatMul"]),
    ):
        graph = build(lm.decoder, spec).graph
        names = [node.name for node in graph.node]
        assert len(set(names)) == len(names), [n for n in names if names.count(n) > 1][:5]
        for node in graph.node:
            match = scoped.match(node.name)
            assert match, f"{node.name!r} ({node.op_type}) is outside the known scopes {TOP_SCOPES}"
            in_layer = node.name.startswith("/layers")
            assert in_layer == (match.group(1) is not None), node.name  # /layers.{i}/ and only there an index
            assert not in_layer or int(match.group(1)) < lm.args.num_layers, node.name
        assert set(landmarks) <= set(names), sorted(set(landmarks) - set(names))
        # A node reading a layer's weight sits in that layer's scope, under the module the weight belongs to.
        initializers = {t.name for t in graph.initializer}
        for node in graph.node:
            for name in set(node.input) & initializers:
                if match := weight.match(name):
                    assert node.name.startswith(f"/layers.{match.group(1)}/"), (name, node.name)
                    assert f"/{match.group(2)}/" in node.name, (name, node.name)
