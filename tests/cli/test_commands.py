import json
import subprocess
import sys

import pytest

from fastadasp.cli import main


def test_plan_json_for_released_shape_needs_no_checkpoint(capsys):
    assert main(["plan", "--model", "wavllm", "--schedule", "decay", "--flops-target", "0.5", "--audio-tokens", "1500", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["ratios"]) == 32 and len(data["tokens_per_layer"]) == 33
    assert abs(data["flops_reduction"] - 0.5) <= 0.02
    assert data["tokens_per_layer"][0] == 1500 and data["tokens_per_layer"][-1] < 1500


def test_plan_tiny_preset_with_ratio(capsys):
    assert main(["plan", "--model", "tiny-qwen2-audio", "--schedule", "constant", "--ratio", "0.2", "--start-layer", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ratios"][0] == 0.0 and all(r == pytest.approx(0.2, abs=2**-16) for r in data["ratios"][1:])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["plan", "--model", "gpt5", "--ratio", "0.3"], "unknown model 'gpt5'"),
        (["plan", "--model", "wavllm", "--ratio", "1.5"], "ratio must be in [0, 1)"),
        (["plan", "--model", "wavllm", "--flops-target", "1.2"], "FLOPs target must be a fraction in (0, 1)"),
        (["plan", "--model", "wavllm", "--schedule", "sparse", "--start-layer", "31", "--flops-target", "0.6"], "infeasible"),
        (["plan", "--model", "tiny-llama", "--start-layer", "9", "--ratio", "0.2"], "past the model's last layer"),
        (["plan", "--model", "llama", "--ratio", "0.2"], "--model-path"),
    ],
)
def test_bad_input_gives_one_clear_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_console_entry_point_runs_the_default_job():
    out = subprocess.run(
        [sys.executable, "-m", "fastadasp.cli", "run", "--model", "tiny-qwen2-audio", "--ratio", "0.3", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    report = json.loads(out.stdout)
    assert report["kv_bytes_reduced"] < report["kv_bytes_full"]
    assert report["audio_tokens_per_layer"][-1] < report["audio_tokens"]


def test_a_command_puts_back_the_process_settings_it_changed(capsys):
    import signal

    from fastadasp.core import progress

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), progress.QUIET
    assert main(["models", "--quiet"]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), progress.QUIET) == before
