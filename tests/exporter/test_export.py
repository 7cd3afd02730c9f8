"""export-engine end to end: files, manifest contract, every accepted opset, atomicity, errors, external data."""

import json

import onnx
import pytest
import torch

from export_checks import reduced_case
from fastadasp.cli import export_engine_main
from fastadasp.core.manifest import AudioTokenRange, Manifest, ManifestError
from fastadasp.exporter import export as export_module
from fastadasp.exporter.audio_encoder import run_audio_encoder_onnx
from fastadasp.exporter.export import MAX_OPSET, MIN_OPSET, ExportConfig, export_model
from fastadasp.reduction.schedule import make_schedule
from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate

FP32_TOL = 1e-4
# One export per accepted opset, the presets' front-ends spread over them: WavLLM's goes through the
# TorchScript exporter at 17 and through torch.export from 18 (see WavLLMLM.audio_front_end).
OPSET_PRESETS = {17: "tiny-wavllm", 18: "tiny-wavllm", 19: "tiny-qwen-audio", 20: "tiny-qwen2-audio",
                 21: "tiny-qwen-audio"}


def _export(lm, out, **kw):
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    config = ExportConfig(audio_tokens=AudioTokenRange(1, 30, 128), **kw)
    manifest = export_model(lm, schedule, out, config, progress=lambda _: None)
    return schedule, manifest


def test_cli_writes_graphs_and_manifest_and_explains_missing_engines(tmp_path, capsys, monkeypatch):
    from fastadasp.engines import toolkit

    def no_toolkit(name):  # this machine has no TensorRT and no TensorRT-RTX, whatever is installed
        raise ImportError(f"simulated: {name} is not installed")

    monkeypatch.setattr(toolkit, "_import_module", no_toolkit)
    out = tmp_path / "exp"
    code = export_engine_main(["--model", "tiny-qwen2-audio", "--schedule", "decay", "--start-layer", "1",
                               "--flops-target", "0.3", "--audio-tokens-range", "1:300:512", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().err
    engine_lines = [line for line in printed.splitlines() if line.startswith("[engines]")]
    assert len(engine_lines) == 1 and "not built" in engine_lines[0]
    manifest = Manifest.load(out)
    assert {"prefill", "decode", "audio_encoder"} <= set(manifest.graphs)
    assert manifest.schedule.flops_target == 0.3
    assert len(manifest.schedule.ratio_numerators) == 6
    assert manifest.plugin.op == "WeightedMerge" and manifest.plugin.plugin_namespace == "fastadasp"
    prefill = onnx.load(out / "prefill.onnx", load_external_data=False)
    merge_nodes = [n for n in prefill.graph.node if n.op_type == "WeightedMerge"]
    assert merge_nodes and all(n.domain == "fastadasp" for n in merge_nodes)
    attrs = {a.name for a in merge_nodes[0].attribute}
    assert {"ratio_numerator", "plugin_version", "plugin_namespace"} <= attrs
    assert [f.name for f in prefill.functions] == ["WeightedMerge"]


def test_runtime_from_export_matches_torch(exports):
    run = exports("tiny-wavllm")
    lm = run.lm
    assert run.manifest.graphs["prefill"].inputs["lora_scale"].shape == ["batch", lm.args.hidden_size]
    inputs = lm.synthetic_prompt(batch_size=2, seed=9)
    config = GenerationConfig(max_new_tokens=16, num_beams=3)
    expected = generate(TorchBackend(lm.decoder, run.schedule), inputs, config).sequences  # before ONNX Runtime
    backend = OnnxRuntimeBackend.from_export(run.directory)
    assert generate(backend, inputs, config).sequences.tolist() == expected.tolist()


def test_opset_presets_cover_every_accepted_opset():
    assert sorted(OPSET_PRESETS) == list(range(MIN_OPSET, MAX_OPSET + 1))


def _default_opset(opset_imports) -> int:
    return {o.domain: o.version for o in opset_imports}[""]


@pytest.mark.parametrize("opset", sorted(OPSET_PRESETS))
def test_every_accepted_opset_passes_the_full_checker_and_matches_torch(exports, opset):
    run = exports(OPSET_PRESETS[opset], opset)
    lm = run.lm
    assert run.manifest.opset == opset
    expected_graphs = {"prefill", "decode", "audio_encoder"} | ({"prompt_scale"} if lm.needs_lora_scale else set())
    assert set(run.manifest.graphs) == expected_graphs
    for entry in run.manifest.graphs.values():
        path = run.directory / entry.file
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        assert _default_opset(model.opset_import) == opset
        for function in model.functions:  # a model-local function imports the model's opset
            assert _default_opset(function.opset_import) == opset, function.name

    # The PyTorch references first (see tests/exporter/test_graphs.py on ONNX Runtime's spinning threads).
    inputs, reference, expected = reduced_case(lm, 11, "reference", run.schedule.ratios)
    config = GenerationConfig(max_new_tokens=8)
    tokens = generate(TorchBackend(lm.decoder, run.schedule), inputs, config).sequences
    # A clip shorter than the window: the front-end graph follows the length at every opset.
    features = lm.synthetic_audio_features(2, torch.Generator().manual_seed(opset), frames=57)
    want = lm.encode_audio(*features.values()).numpy()

    # Prefill (reduced, margin-controlled request) and greedy decode.
    backend = OnnxRuntimeBackend.from_export(run.directory)
    result = backend.prefill(inputs, max_new_tokens=8)
    torch.testing.assert_close(result.logits, expected.logits, rtol=FP32_TOL, atol=FP32_TOL)
    assert backend.cache.lengths == reference.cache.lengths
    assert generate(backend, inputs, config).sequences.tolist() == tokens.tolist()

    # The audio front-end against encode_audio.
    got = run_audio_encoder_onnx(run.directory / run.manifest.graphs["audio_encoder"].file,
                                 **{k: v.numpy() for k, v in features.items()})
    assert got.shape == want.shape
    assert float(abs(got - want).max()) <= FP32_TOL


def test_manifest_mismatch_is_refused(tmp_path, tiny):
    _export(tiny("tiny-llama"), tmp_path)
    path = tmp_path / "manifest.json"
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="version 99"):
        OnnxRuntimeBackend.from_export(tmp_path)
    data["version"] = 2
    path.write_text(json.dumps(data))
    with open(tmp_path / "decode.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="decode.onnx does not match"):
        Manifest.load(tmp_path)


def test_failed_export_leaves_previous_export_intact(tmp_path, tiny, monkeypatch):
    lm = tiny("tiny-llama")
    _export(lm, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(*_args, **_kw):
        raise RuntimeError("simulated failure while building decode")

    monkeypatch.setattr(export_module, "build_decode", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        _export(lm, tmp_path, position_policy="first")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no staging folder, no half-written graph, old manifest untouched


def test_large_models_use_external_data(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_THRESHOLD", 0)
    lm = tiny("tiny-llama")
    schedule, manifest = _export(lm, tmp_path, include_audio_encoder=False)
    assert manifest.graphs["prefill"].files == ["prefill.onnx", "prefill.onnx.data"]
    assert set(manifest.graphs["prefill"].sha256) == {"prefill.onnx", "prefill.onnx.data"}
    backend = OnnxRuntimeBackend.from_export(tmp_path)
    inputs = lm.synthetic_prompt(seed=1)
    torch.testing.assert_close(backend.prefill(inputs, 1).logits,
                               TorchBackend(lm.decoder, schedule).prefill(inputs, 1).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--audio-tokens-range", "30:1:5"], "MIN <= OPT <= MAX"),
        (["--audio-tokens-range", "big"], "MIN:OPT:MAX"),
        (["--opset", "13"], "--opset 13 is outside the supported 17..21"),
        (["--ratio", "1.2"], "ratio must be in [0, 1)"),
    ],
)
def test_bad_export_arguments_give_one_line(tmp_path, capsys, argv, message):
    code = export_engine_main(["--model", "tiny-llama", "--out", str(tmp_path / "x"), "--skip-engines", *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_export_writes_tokenizer_template_and_audio_recipe(exports):
    """tokenizer.json and prompt_template.json are in the export, hashed in the manifest and checked on load;
    the manifest carries the audio encoder's input recipe."""
    import hashlib

    from fastadasp.models.prompt_template import PromptTemplate
    from fastadasp.models.tokenizer import TextTokenizer

    run = exports("tiny-qwen2-audio")
    text = run.manifest.text
    assert (text.tokenizer, text.template) == ("tokenizer.json", "prompt_template.json")
    for file in (text.tokenizer, text.template):
        assert text.sha256[file] == hashlib.sha256((run.directory / file).read_bytes()).hexdigest()
    assert "built offline for tiny-qwen2-audio" in text.source
    tokenizer = TextTokenizer.from_file(run.directory / text.tokenizer)
    assert tokenizer.vocab_size == run.lm.args.vocab_size
    assert tokenizer.token_id("<|AUDIO|>") == run.lm.audio_token_id  # the placeholder the processor expands
    assert PromptTemplate.load(run.directory / text.template) == run.lm.prompt_template()
    audio = run.manifest.audio
    assert (audio.sample_rate, audio.features, audio.mel_bins, audio.long_audio) == (16000, "whisper_log_mel", 16, "truncate")
    assert exports("tiny-wavllm").manifest.audio.long_audio == "chunk"
    assert exports("tiny-wavllm").manifest.audio.inputs == {"input_features": "log_mel", "waveform": "waveform"}


def test_a_tampered_tokenizer_is_refused(exports, tmp_path):
    import shutil

    copy = tmp_path / "exp"
    shutil.copytree(exports("tiny-qwen-audio").directory, copy)
    with open(copy / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ManifestError, match="tokenizer.json does not match the hash"):
        Manifest.load(copy)
