"""prompt_scale.onnx: WavLLM's prompt-aware LoRA scale computed by an exported graph, equal to the PyTorch
scale pass at every prompt length, sharing the prefill's weights when they live in external data."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from fastadasp.exporter import export as export_module
from fastadasp.exporter.export import ExportConfig, export_model
from fastadasp.core.manifest import AudioTokenRange
from fastadasp.reduction.schedule import make_schedule

TOL = 1e-4


def _scale_session(directory, manifest):
    return ort.InferenceSession(str(directory / manifest.graphs["prompt_scale"].file), providers=["CPUExecutionProvider"])


def test_graph_matches_the_pytorch_scale_pass(exports):
    run = exports("tiny-wavllm")
    lm = run.lm
    entry = run.manifest.graphs["prompt_scale"]
    assert list(entry.inputs) == ["prompt_ids"] and list(entry.outputs) == ["lora_scale"]
    assert entry.outputs["lora_scale"].shape == ["batch", lm.args.hidden_size]
    session = _scale_session(run.directory, run.manifest)
    gen = torch.Generator().manual_seed(0)
    for batch, length in [(1, 1), (2, 5), (1, 23), (3, 64)]:
        ids = torch.randint(0, lm.args.vocab_size, (batch, length), generator=gen)
        want = lm.prompt_lora_scale(ids).numpy()
        got = session.run(None, {"prompt_ids": ids.numpy()})[0]
        assert got.shape == want.shape == (batch, lm.args.hidden_size)
        assert float(np.abs(got - want).max()) <= TOL, (batch, length)
        assert 0.0 <= got.min() and got.max() <= 3.0  # relu, then clamped at WavLLM's maximum


def test_models_without_prompt_lora_have_no_scale_graph(exports):
    assert "prompt_scale" not in exports("tiny-qwen2-audio").manifest.graphs


def test_scale_graph_reads_the_prefill_weights_from_external_data(tiny, tmp_path, monkeypatch):
    """Large models keep decoder weights in prefill.onnx.data once: the scale graph points into that file."""
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_THRESHOLD", 0)
    lm = tiny("tiny-wavllm")
    manifest = export_model(lm, make_schedule("decay", lm.args.num_layers, 1, 0.5), tmp_path,
                            ExportConfig(audio_tokens=AudioTokenRange(1, 30, 128), include_audio_encoder=False),
                            progress=lambda _: None)
    entry = manifest.graphs["prompt_scale"]
    assert entry.files == ["prompt_scale.onnx", "prefill.onnx.data"]
    assert not (tmp_path / "prompt_scale.onnx.data").exists()
    # Only the scale network's own small weights are inside the graph file.
    assert (tmp_path / "prompt_scale.onnx").stat().st_size < (tmp_path / "prefill.onnx.data").stat().st_size / 4
    ids = torch.randint(0, lm.args.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    got = _scale_session(tmp_path, manifest).run(None, {"prompt_ids": ids.numpy()})[0]
    np.testing.assert_allclose(got, lm.prompt_lora_scale(ids).numpy(), atol=TOL, rtol=0)
