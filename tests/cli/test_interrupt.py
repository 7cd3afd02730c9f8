"""SIGINT / SIGTERM at several moments of export-engine leave the previous complete export or nothing: no
staging directory, no temporary engine file, no half-written graph; and the next run succeeds."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fastadasp.core.manifest import Manifest

EXPORT = ["--model", "tiny-llama", "--ratio", "0.3", "--start-layer", "1", "--audio-tokens-range", "1:24:48",
          "--max-batch", "2", "--max-text-tokens", "16", "--max-new-tokens", "8"]


def _tensorrt_rtx() -> bool:
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        return False
    return True


# The child sends the signal to itself when a stderr line contains the marker, so the moment is exact
# (a parent watching the pipe would race steps that take milliseconds on a tiny model).
_CHILD = """
import os, sys
from fastadasp.cli import export_engine_main
marker, sig = sys.argv[1], int(sys.argv[2])

class Tripwire:
    def __init__(self, stream):
        self.stream, self.fired = stream, not marker

    def write(self, text):
        n = self.stream.write(text)
        if not self.fired and marker in text:
            self.fired = True
            self.stream.flush()
            os.kill(os.getpid(), sig)
        return n

    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stderr = Tripwire(sys.stderr)
sys.exit(export_engine_main(sys.argv[3:]))
"""


def _run_and_signal(out: Path, cache: Path, extra: list[str], marker: str | None, sig: int, timeout: float = 240):
    """Run export-engine; it gets `sig` when it prints a stderr line containing `marker`. -> (status, stderr)"""
    cmd = [sys.executable, "-c", _CHILD, marker or "", str(int(sig)),
           *EXPORT, "--out", str(out), "--engine-cache", str(cache), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if marker:
        assert marker in proc.stderr, f"never reached {marker!r}:\n{proc.stderr}"
    return proc.returncode, proc.stderr


def _leftovers(parent: Path, cache: Path) -> list[str]:
    hidden = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    temp = [str(p) for p in cache.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".building")] \
        if cache.exists() else []
    return hidden + temp


MOMENTS = [
    ("[export] prefill.onnx written", signal.SIGTERM, False),
    ("[export] building decode.onnx", signal.SIGINT, True),
    ("[engine]", signal.SIGTERM, True),
    ("[engine]", signal.SIGINT, False),
]


@pytest.mark.parametrize("marker,sig,previous", MOMENTS, ids=[f"{m}-{s.name}-{'prev' if p else 'fresh'}"
                                                              for m, s, p in MOMENTS])
def test_interrupted_export_leaves_previous_or_nothing(tmp_path, marker, sig, previous):
    building_engines = marker == "[engine]"
    if building_engines and not _tensorrt_rtx():
        pytest.skip("interrupting an engine build needs TensorRT-RTX (tensorrt-rtx-cu13)")
    out, cache = tmp_path / "export", tmp_path / "cache"
    engine_args = ["--compute-capability", "8.6"] if building_engines else ["--skip-engines"]
    before = None
    if previous:
        status, err = _run_and_signal(out, cache, ["--skip-engines"], None, sig)
        assert status == 0, err
        before = {p.name: p.read_bytes() for p in out.iterdir()}
    status, err = _run_and_signal(out, cache, engine_args, marker, sig)
    assert status == 128 + sig, err
    assert "Traceback" not in err and "stopped cleanly" in err, err
    assert _leftovers(tmp_path, cache) == [], err
    if previous:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        Manifest.load(out)
    else:
        assert not out.exists()


def test_next_run_after_a_kill_succeeds_and_cleans_up(tmp_path):
    """SIGKILL cannot be handled: its staging directory stays until the next run removes it."""
    out, cache = tmp_path / "export", tmp_path / "cache"
    status, _ = _run_and_signal(out, cache, ["--skip-engines"], "[export] building decode.onnx", signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert any(p.name.startswith(".export.staging-") for p in tmp_path.iterdir())
    status, err = _run_and_signal(out, cache, ["--skip-engines"], None, signal.SIGTERM)
    assert status == 0, err
    assert _leftovers(tmp_path, cache) == []
    assert Manifest.load(out).model.name == "tiny-llama"
