"""Every bad input: exit status 2, one line on stderr naming the option or file and the fix, no traceback,
and (where it matters) refused before any model is built or any file is written."""

from __future__ import annotations

import json
import re

import pytest

from fastadasp.cli import commands, export_engine_main, main
from fastadasp.models.registry import get_spec, model_names


@pytest.fixture
def no_model_building(monkeypatch):
    """Validation must happen before a model is built: building one fails the test."""

    def refuse(*_args, **_kw):
        raise AssertionError("a model was built before the options were checked")

    monkeypatch.setattr(commands, "load_model", refuse)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny-llama"
    code = export_engine_main(["--model", "tiny-llama", "--ratio", "0.3", "--start-layer", "1", "--skip-engines",
                               "--audio-tokens-range", "1:48:64", "--max-batch", "5", "--max-new-tokens", "32",
                               "--quiet", "--out", str(out)])
    assert code == 0
    return out


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


EXPORT = ["--model", "tiny-llama", "--ratio", "0.3", "--skip-engines", "--quiet"]


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--opset", "99"], ["--opset 99", "17..21"]),
        (["--opset", "13"], ["--opset 13", "17..21"]),
        (["--max-batch", "0"], ["--max-batch must be >= 1"]),
        (["--max-new-tokens", "0"], ["--max-new-tokens must be >= 1"]),
        (["--audio-tokens-range", "30:1:5"], ["--audio-tokens-range", "MIN <= OPT <= MAX"]),
        (["--audio-tokens-range", "big"], ["--audio-tokens-range", "MIN:OPT:MAX"]),
        (["--ratio", "1.2"], ["--ratio must be in [0, 1)"]),
        (["--audio-tokens", "777"], ["--audio-tokens", "--audio-tokens-range"]),
        (["--audio-tok", "777"], ["unrecognized arguments: --audio-tok"]),  # no abbreviations
        (["--model-path", "/nonexistent"], ["--model-path", "is for released models"]),
    ],
)
def test_export_engine_options(tmp_path, capsys, no_model_building, argv, needles):
    out = tmp_path / "out"
    code = export_engine_main([*EXPORT, "--out", str(out), *argv])
    _one_line_error(capsys, code, *needles)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_engine_out_is_a_file_or_under_a_file(tmp_path, capsys, no_model_building):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(capsys, export_engine_main([*EXPORT, "--out", str(afile)]), "--out", "is an existing file")
    _one_line_error(capsys, export_engine_main([*EXPORT, "--out", str(afile / "sub")]), "--out", "is a file")
    assert afile.read_text() == "x"


@pytest.mark.parametrize("kind", ["text file", "folder without weights"])
def test_model_path_that_is_not_a_checkpoint(tmp_path, capsys, kind):
    path = tmp_path / "ckpt"
    if kind == "text file":
        path.write_text("not a checkpoint\n")
    else:
        path.mkdir()
        (path / "README").write_text("empty")
    code = main(["plan", "--model", "qwen2-audio", "--model-path", str(path), "--ratio", "0.3"]) \
        if kind == "folder without weights" else main(["select-layer", "--model", "wavllm", "--model-path", str(path)])
    _one_line_error(capsys, code, f"--model-path {path}")


def test_model_path_on_a_tiny_preset(capsys, no_model_building):
    _one_line_error(capsys, main(["run", "--model", "tiny-llama", "--model-path", "/tmp"]), "--model-path", "tiny preset")


def test_released_model_without_path_suggests_only_real_presets(capsys):
    err = _one_line_error(capsys, main(["plan", "--model", "qwen2", "--ratio", "0.2"]), "--model-path")
    suggested = set(re.findall(r"tiny-[a-z0-9-]+", err))
    assert suggested and suggested <= set(model_names())
    assert all(get_spec(name).is_preset for name in suggested)


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--method", "h2o", "--ratio", "0.3"], ["--method h2o", "drop --ratio"]),
        (["--method", "fastv", "--schedule", "decay"], ["--method fastv", "--schedule sparse"]),
        (["--method", "h2o", "--kv-budget", "0"], ["--kv-budget must be >= 1"]),
        (["--kv-budget", "8"], ["--kv-budget", "only to --method h2o"]),
        (["--num-beams", "0"], ["--num-beams must be >= 1"]),
        (["--audio", "stereo8k.wav"], ["unrecognized arguments: --audio"]),
        (["--start-layer", "-1"], ["--start-layer must be >= 0"]),
    ],
)
def test_run_options(capsys, no_model_building, argv, needles):
    _one_line_error(capsys, main(["run", "--model", "tiny-llama", *argv]), *needles)


def test_run_max_new_tokens_past_the_model_positions(capsys):
    _one_line_error(capsys, main(["run", "--model", "tiny-llama", "--max-new-tokens", "1000000"]),
                    "--max-new-tokens 1000000", "positions")


def test_run_h2o_reports_its_budget_not_a_merge_schedule(capsys):
    assert main(["run", "--model", "tiny-llama", "--method", "h2o", "--max-new-tokens", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "H2O decode-time eviction" in out and "prefill FLOPs cut" not in out and "audio tokens per layer" not in out


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--num-beams", "64"], ["64 rows", "at most 5", "--max-batch 64"]),
        (["--max-new-tokens", "3000"], ["--max-new-tokens 3000", "decode budget of 32"]),
        (["--max-new-tokens", "1000000"], ["--max-new-tokens 1000000"]),
        (["--num-beams", "0"], ["--num-beams must be >= 1"]),
    ],
)
def test_generate_limits_are_checked_against_the_export(tiny_export, capsys, no_model_building, argv, needles):
    _one_line_error(capsys, main(["generate", "--export-dir", str(tiny_export), *argv]), *needles)


def test_generate_from_a_manifest_missing_a_key(tiny_export, tmp_path, capsys, no_model_building):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_export.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = json.loads((broken / "manifest.json").read_text())
    del data["schedule"]
    (broken / "manifest.json").write_text(json.dumps(data))
    _one_line_error(capsys, main(["generate", "--export-dir", str(broken)]), "'schedule' is missing", "export-engine")


def test_generate_from_a_directory_without_export(tmp_path, capsys, no_model_building):
    _one_line_error(capsys, main(["generate", "--export-dir", str(tmp_path)]), "no manifest.json", "export-engine")


def test_select_layer_options(capsys, no_model_building):
    _one_line_error(capsys, main(["select-layer", "--model", "tiny-llama", "--ratio", "1.5"]), "--ratio must be in (0, 1)")


def test_every_option_has_help_and_defaults_are_shown():
    from fastadasp.cli.parsers import build_export_parser, build_parser

    parsers = [build_export_parser()]
    top = build_parser()
    sub = next(a for a in top._actions if a.dest == "command")
    parsers += list(sub.choices.values())
    for p in parsers:
        assert not p.allow_abbrev
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{p.prog} {action.option_strings} has no help"
        assert "(default:" in p.format_help() or p.prog.endswith("models")
    for choice in sub._choices_actions:
        assert choice.help, f"subcommand {choice.dest} has no help line"
