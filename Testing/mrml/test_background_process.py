"""The Slicer modules' background runner against the real engine worker (``selftest`` task)."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

import module_paths  # noqa: F401  (puts the module folders on sys.path)
from DSAReconstructionLib.process import BackgroundProcess, State, engine_root

TIMEOUT = 120


def _launcher(tmp_path: Path, body: str) -> str:
    """An executable that stands in for the interpreter (like Slicer's ``PythonSlicer`` launcher)."""
    path = tmp_path / "launcher.sh"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _run_until(proc: BackgroundProcess, condition, timeout: float = TIMEOUT) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while not condition(events):
        assert time.monotonic() < deadline, f"timed out; state {proc.state}, events {events[-3:]}"
        events += proc.poll()
        time.sleep(0.02)
    return events


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_engine_root_holds_the_engine():
    assert (engine_root() / "angiorecon" / "worker.py").is_file()


def test_progress_in_order_and_manifest(tmp_path):
    out = tmp_path / "out"
    proc = BackgroundProcess("selftest", {"steps": 4, "step_seconds": 0.02}, out, device="cpu",
                             work_dir=tmp_path / "job")
    assert proc.state is State.IDLE
    proc.start()
    assert proc.running
    events = proc.wait(TIMEOUT)
    assert proc.state is State.FINISHED, events
    assert proc.returncode == 0 and proc.fraction == 1.0
    progress = [e for e in events if e["event"] == "progress"]
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [e["message"] for e in progress if e["stage"] == "selftest"] == [f"step {i}/4" for i in range(1, 5)]
    assert events[-1]["event"] == "result"
    assert proc.manifest == out / "manifest.json"
    manifest = json.loads(proc.manifest.read_text())
    assert manifest["task"] == "selftest" and manifest["job"] == {"steps": 4, "step_seconds": 0.02}
    assert json.loads((tmp_path / "job" / "job.json").read_text()) == manifest["job"]
    assert proc.poll() == [] and proc.wait(0) == []


def test_cancel_kills_tree_and_leaves_no_outputs(tmp_path):
    """Cancel through a launcher (parent shell + child interpreter), as inside Slicer."""
    out = tmp_path / "out"
    python = _launcher(tmp_path, f'"{sys.executable}" "$@"\nexit $?')
    proc = BackgroundProcess("selftest", {"steps": 50, "step_seconds": 0.2}, out, device="cpu", python=python)
    proc.start()
    events = _run_until(proc, lambda ev: sum(e["event"] == "progress" and e["stage"] == "selftest" for e in ev) >= 3)
    tree = _tree(proc.pid)
    assert len(tree) >= 2, "launcher should have the interpreter as a child"
    assert list(tmp_path.glob(".out.partial-*")), "the worker should be writing into its staging folder"
    proc.cancel()
    assert proc.state is State.CANCELLING
    events += proc.wait(TIMEOUT)
    assert proc.state is State.CANCELLED
    assert all(_gone(p) for p in tree)
    assert not proc.work_dir.exists(), "the temporary job folder is removed when the run ends"
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["kind"] == "cancelled"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1


def test_cancel_escalates_to_kill_and_removes_staging(tmp_path):
    """A worker stuck between safe points is killed after the grace period; its staging folder goes."""
    out = tmp_path / "out"
    proc = BackgroundProcess("selftest", {"steps": 3, "step_seconds": 30}, out, device="cpu", grace_seconds=0.3)
    proc.start()
    _run_until(proc, lambda ev: any(e["event"] == "progress" and e["stage"] == "selftest" for e in ev))
    assert list(tmp_path.glob(".out.partial-*"))
    t0 = time.monotonic()
    proc.cancel()
    events = proc.wait(TIMEOUT)
    assert time.monotonic() - t0 < 10
    assert proc.state is State.CANCELLED and proc.returncode == -signal.SIGKILL
    assert [e for e in events if e["event"] == "error"] == [
        {"event": "error", "kind": "cancelled", "message": "cancelled by the user"}]
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_killed_worker_becomes_error_event(tmp_path):
    proc = BackgroundProcess("selftest", {"steps": 3, "step_seconds": 30}, tmp_path / "out", device="cpu")
    proc.start()
    _run_until(proc, lambda ev: any(e["event"] == "progress" for e in ev))
    os.kill(proc.pid, signal.SIGKILL)
    events = proc.wait(TIMEOUT)
    assert proc.state is State.FAILED and proc.error_kind == "internal"
    assert events[-1]["event"] == "error"
    assert events[-1]["message"].startswith("selftest worker was killed by SIGKILL")
    assert not list(tmp_path.glob(".out.partial-*"))


def test_crash_without_error_event_carries_stderr(tmp_path):
    python = _launcher(tmp_path, 'echo "starting"\necho "Traceback (most recent call last):" >&2\n'
                                 'echo "ImportError: libtorch_cpu.so: cannot open shared object file" >&2\nexit 1')
    proc = BackgroundProcess("reconstruct", {}, tmp_path / "out", python=python)
    proc.start()
    events = proc.wait(TIMEOUT)
    assert proc.state is State.FAILED and proc.returncode == 1
    assert {"event": "log", "level": "stdout", "message": "starting"} in events
    assert events[-1] == {"event": "error", "kind": "internal", "message":
                          "reconstruct worker exited with code 1: ImportError: libtorch_cpu.so: "
                          "cannot open shared object file"}
    assert proc.message == events[-1]["message"]


def test_worker_error_event_is_passed_through_once(tmp_path):
    proc = BackgroundProcess("selftest", {"steps": 2, "step_seconds": 0, "fail": "internal"}, tmp_path / "out",
                             device="cpu")
    proc.start()
    events = proc.wait(TIMEOUT)
    errors = [e for e in events if e["event"] == "error"]
    assert errors == [{"event": "error", "kind": "internal",
                       "message": "RuntimeError: selftest was asked to fail with an internal error"}]
    assert proc.state is State.FAILED and proc.returncode == 1
    assert any(e["event"] == "log" and e["level"] == "stderr" and "Traceback" in e["message"] for e in events)
    assert not (tmp_path / "out").exists()


def test_bad_input_kind(tmp_path):
    proc = BackgroundProcess("selftest", {"steps": 0}, tmp_path / "out", device="cpu")
    proc.start()
    proc.wait(TIMEOUT)
    assert proc.state is State.FAILED and proc.error_kind == "bad-input" and proc.returncode == 2
    assert proc.message == "steps must be >= 1, got 0"


def test_start_twice_is_refused(tmp_path):
    proc = BackgroundProcess("selftest", {"steps": 1, "step_seconds": 0}, tmp_path / "out", device="cpu")
    proc.start()
    with pytest.raises(RuntimeError, match="already started"):
        proc.start()
    proc.wait(TIMEOUT)
    assert proc.state is State.FINISHED
