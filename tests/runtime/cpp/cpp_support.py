"""Shared by conftest.py and the tests: where the C++ runtime lives, the preset exports, the build handle."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "runtime" / "cpp"
BUILD_DIR_ENV = "FASTADASP_CPP_BUILD_DIR"  # reuse a build folder across sessions (incremental builds)

# Every tiny preset, each with another schedule / precision / limit so the dry-run comparison covers them.
PRESET_EXPORTS = {
    "tiny-llama": ["--schedule", "decay", "--ratio", "0.3"],
    "tiny-qwen2-audio": ["--schedule", "constant", "--ratio", "0.5", "--max-new-tokens", "64"],
    "tiny-wavllm": ["--schedule", "sparse", "--ratio", "0.6", "--max-text-tokens", "96"],
    "tiny-qwen-audio": ["--schedule", "decay", "--ratio", "0.45", "--dtype", "fp16", "--audio-tokens-range",
                        "1:800:2000", "--max-batch", "8"],
}


@dataclass
class CppBuild:
    directory: Path
    run: Path  # fastadasp-run
    has_gtest: bool
    tensorrt_mode: str  # "linked" | "compile-only" | "none" (CMake's FASTADASP_TRT_MODE)
    headers_note: str
    timings: dict[str, float] = field(default_factory=dict)

    def dry_run(self, export_dir, *args, check=True) -> subprocess.CompletedProcess:
        return self.fastadasp_run("--export-dir", str(export_dir), "--dry-run", *args, check=check)

    def fastadasp_run(self, *args, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.run), *map(str, args)], capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            pytest.fail(f"fastadasp-run {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc
