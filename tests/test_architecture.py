"""Layers point down only: the import-linter contract in pyproject.toml holds, and an upward import
breaks it (checked on a copy of the package, so the source tree is never touched)."""

import shutil
import subprocess
import sys
from pathlib import Path

import fastadasp

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                          cwd=cwd, env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_layers_contract_is_kept():
    result = _lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    package = Path(fastadasp.__file__).parent
    copy = tmp_path / "fastadasp"
    shutil.copytree(package, copy, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "build*"))
    (copy / "reduction" / "upward_probe.py").write_text("from fastadasp.runtime import generate  # upward\n")
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "fastadasp.reduction.upward_probe -> fastadasp.runtime.generate" in result.stdout, result.stdout
