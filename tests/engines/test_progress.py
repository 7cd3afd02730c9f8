"""Build progress: which phases are printed, the heartbeat during long phases, and the cancel answer."""

from __future__ import annotations

import os
import signal
import time

from fastadasp.core import interrupts
from fastadasp.engines.progress import BuildProgress, heartbeat, make_progress_monitor
from fake_tensorrt_builder import make_fake_tensorrt


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_monitor_prints_outer_phases_only(capsys):
    monitor = make_progress_monitor(make_fake_tensorrt(), BuildProgress(True, "prefill"))
    monitor.phase_start("Building engine", None, 6)
    monitor.phase_start("Building engine from subgraph", "Building engine", 1)
    monitor.phase_start("Determining refit engines", "Building engine from subgraph", 2)
    assert monitor.current_phase == "Determining refit engines"
    assert monitor.step_complete("Determining refit engines", 0) is True
    for phase in ("Determining refit engines", "Building engine from subgraph", "Building engine"):
        monitor.phase_finish(phase)
    lines = _lines(capsys)
    assert [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in lines] == [
        "Building engine (6 steps)", "  Building engine from subgraph (1 steps)", "Building engine done"]
    assert all(line.startswith("[engine] prefill: ") and line.endswith("s)") for line in lines)
    assert monitor.current_phase is None


def test_disabled_progress_prints_nothing(capsys):
    progress = BuildProgress(False, "prefill")
    monitor = make_progress_monitor(make_fake_tensorrt(), progress)
    monitor.phase_start("Building engine", None, 6)
    with heartbeat(progress, monitor, every=0.05):
        time.sleep(0.2)
    assert capsys.readouterr().err == ""


def test_heartbeat_names_the_phase_while_the_monitor_is_quiet(capsys):
    progress = BuildProgress(True, "prefill")
    monitor = make_progress_monitor(make_fake_tensorrt(), progress)
    monitor.phase_start("Building engine", None, 6)
    monitor.phase_start("Determining refit engines", "Building engine", 2)
    capsys.readouterr()
    with heartbeat(progress, monitor, every=0.1):
        time.sleep(0.45)
    beats = _lines(capsys)
    assert 2 <= len(beats) <= 5, beats
    assert all("[engine] prefill: still building: Determining refit engines (" in b for b in beats), beats


def test_step_complete_says_stop_once_an_interrupt_is_requested(capsys, interrupt_handlers):
    monitor = make_progress_monitor(make_fake_tensorrt(), BuildProgress(True, "decode"))
    assert monitor.step_complete("Building engine", 0) is True
    try:
        with interrupts.native_section():
            os.kill(os.getpid(), signal.SIGINT)  # recorded, not raised: "native code" is running
            answers = [monitor.step_complete("Building engine", step) for step in (1, 2)]
    except interrupts.Interrupted as exc:
        assert exc.signum == signal.SIGINT
    else:
        raise AssertionError("leaving the native section must raise Interrupted")
    assert answers == [False, False] and monitor.cancelled
    cancel_lines = [line for line in _lines(capsys) if "cancelling" in line]
    assert len(cancel_lines) == 1 and cancel_lines[0].startswith("[engine] decode: interrupted: cancelling the build")


def test_exception_in_a_callback_is_kept_and_cancels(monkeypatch):
    """A KeyboardInterrupt (no interrupt handler installed) must not unwind through TensorRT's C++."""
    monitor = make_progress_monitor(make_fake_tensorrt(), BuildProgress(False, "decode"))

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(interrupts, "requested", ctrl_c)
    assert monitor.step_complete("Building engine", 0) is False
    assert isinstance(monitor.error, KeyboardInterrupt)
