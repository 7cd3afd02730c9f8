"""TensorRT(-RTX) parses and builds our exported standard-op graphs (skipped where it cannot load)."""

import pytest

from fastadasp.cli import export_engine_main
from fastadasp.exporter.manifest import load_manifest


@pytest.mark.tensorrt
def test_export_engine_builds_engines_for_every_graph(tmp_path, capsys):
    from fastadasp.engines.builder import TensorRTUnavailable, load_tensorrt

    try:
        _, flavor = load_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    if flavor != "tensorrt-rtx":
        pytest.skip("this check builds for SM86 on a CPU, which needs TensorRT-RTX")
    out = tmp_path / "exp"
    code = export_engine_main([
        "--model", "tiny-wavllm", "--schedule", "decay", "--start-layer", "1", "--ratio", "0.5",
        "--audio-tokens-range", "1:25:128", "--compute-capability", "8.6", "--max-batch", "2",
        "--max-text-tokens", "32", "--max-new-tokens", "16", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    manifest = load_manifest(out)
    (entry,) = manifest["engines"].values()
    assert entry["compute_capability"] == "8.6"
    assert set(entry["graphs"]) == {"prefill", "decode", "audio_encoder"}
    for graph in entry["graphs"].values():
        assert (out / graph["file"]).stat().st_size == graph["bytes"] > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
