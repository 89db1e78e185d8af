"""Run one engine task as a background process and follow it without blocking the caller.

Slicer-free (standard library + psutil), shared by all three modules and used unchanged by scripts
and tests. The worker is ``python -m angiorecon <task> --job job.json --out DIR --device D``; it
prints one JSON event per line on stdout (see ``angiorecon/worker.py``). A reader thread puts the
events into a queue; the owner drains them with :meth:`BackgroundProcess.poll` (inside Slicer from a
``qt.QTimer`` in the module's Logic, so the GUI never waits on a pipe).

Cancel follows the MONAIAuto3DSeg pattern: the whole process tree is terminated (children first,
because inside Slicer ``PythonSlicer`` is a launcher whose child is the real interpreter), and
anything still alive after a grace period is killed. SIGTERM lets the worker stop at its next
safe point and delete its staging folder itself; after a hard kill the runner removes the
orphaned staging folder, so a cancelled run never leaves partial outputs.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ENGINE_PACKAGE = "angiorecon"
#: stderr lines kept for the error message of a crashed worker.
STDERR_TAIL_LINES = 200
#: seconds between SIGTERM and SIGKILL on cancel.
DEFAULT_GRACE_SECONDS = 5.0


class State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (State.FINISHED, State.FAILED, State.CANCELLED)


def engine_root() -> Path:
    """Folder that contains the ``angiorecon`` package, to put on the worker's ``PYTHONPATH``.

    Installed extension: the package sits beside ``DSAReconstructionLib`` in the scripted-modules
    folder. Source checkout (Slicer's "additional module paths" pointing at the module folders):
    it sits at the repository root, two levels up.
    """
    lib_parent = Path(__file__).resolve().parent.parent
    for candidate in (lib_parent, lib_parent.parent):
        if (candidate / ENGINE_PACKAGE / "__main__.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"cannot find the {ENGINE_PACKAGE} engine package next to {lib_parent} or {lib_parent.parent}")


def default_python() -> str:
    """Interpreter for the worker: ``PythonSlicer`` inside Slicer, else this interpreter."""
    if getattr(sys.modules.get("slicer"), "app", None) is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def worker_command(task: str, job_file: Path, out_dir: Path, device: str = "auto",
                   python: str | None = None) -> list[str]:
    """The worker command line (also what a user can type to repeat a run)."""
    return [python or default_python(), "-m", ENGINE_PACKAGE, task, "--job", str(job_file),
            "--out", str(out_dir), "--device", device, "--events", "json"]


class BackgroundProcess:
    """One engine task in a child process: start, :meth:`poll` events, :meth:`cancel`, :meth:`wait`.

    ``poll`` also keeps the public state up to date: :attr:`state`, :attr:`fraction`,
    :attr:`stage`, :attr:`message`, :attr:`manifest` (path of ``manifest.json`` on success) and
    :attr:`error_kind`. The state becomes final (``state.done``) only after the worker process
    has exited, so a finished, failed or cancelled run has no process left. A worker that dies
    without reporting an error (crash, kill, OOM killer) still produces exactly one ``error``
    event whose message comes from its stderr.
    """

    def __init__(self, task: str, job: dict[str, Any], out_dir: str | os.PathLike[str], *,
                 device: str = "auto", python: str | None = None, work_dir: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.task = task
        self.job = dict(job)
        self.out_dir = Path(out_dir).absolute()
        self.device = device
        self.python = python or default_python()
        #: holds job.json; a temporary one is deleted when the run ends (the manifest repeats the job)
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=f"{ENGINE_PACKAGE}-{task}-"))
        self._owns_work_dir = work_dir is None
        self.base_env = dict(os.environ if env is None else env)
        self.grace_seconds = grace_seconds

        self.state = State.IDLE
        self.fraction = 0.0
        self.stage = ""
        self.message = ""
        self.manifest: Path | None = None
        self.error_kind = ""
        self.returncode: int | None = None

        self._popen: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._done = threading.Event()
        self._cancel_requested = False
        self._killed: list[psutil.Process] = []      #: the tree cancel() signalled

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def job_file(self) -> Path:
        return self.work_dir / "job.json"

    @property
    def command(self) -> list[str]:
        return worker_command(self.task, self.job_file, self.out_dir, self.device, self.python)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        """Write ``job.json`` and launch the worker; returns at once."""
        if self.state is not State.IDLE:
            raise RuntimeError(f"process already started (state {self.state.value})")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.job_file.write_text(json.dumps(self.job, indent=2))
        env = dict(self.base_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(engine_root()), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        self._popen = subprocess.Popen(
            self.command, cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self.state = State.RUNNING
        self.stage = "starting"
        threading.Thread(target=self._read_stdout, name=f"{self.task}-stdout", daemon=True).start()

    def poll(self) -> list[dict[str, Any]]:
        """Return the events received since the last call (never blocks) and update the state."""
        events: list[dict[str, Any]] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return events
            if event is None:
                self._settle()
            else:
                self._apply(event)
                events.append(event)

    def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Block until the worker has ended (or ``timeout`` s) and return the events not yet polled."""
        self._done.wait(timeout)
        return self.poll()

    @property
    def running(self) -> bool:
        return self.state in (State.RUNNING, State.CANCELLING)

    def cancel(self) -> None:
        """Stop the worker: SIGTERM the process tree now, SIGKILL what is left after the grace period."""
        if self._popen is None or self.state.done or self._cancel_requested:
            return
        self._cancel_requested = True
        self.state = State.CANCELLING
        self.stage = "cancelling"
        try:
            root = psutil.Process(self._popen.pid)
            tree = root.children(recursive=True) + [root]
        except psutil.NoSuchProcess:
            return
        self._killed = tree
        for proc in tree:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        threading.Thread(target=self._kill_after_grace, args=(tree,), name=f"{self.task}-kill",
                         daemon=True).start()

    # -- internals ------------------------------------------------------------------------------
    def _kill_after_grace(self, tree: list[psutil.Process]) -> None:
        """SIGKILL every process of the tree still alive when the grace period ends.

        The direct child is waited for through ``Popen`` (psutil would reap it and hide its exit
        status from the reader thread); the others are polled by psutil.
        """
        assert self._popen is not None
        deadline = time.monotonic() + self.grace_seconds
        for proc in tree:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                if proc.pid == self._popen.pid:
                    self._popen.wait(remaining)
                else:
                    proc.wait(remaining)
                continue
            except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
                pass
            except psutil.NoSuchProcess:
                continue
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass

    def _wait_for_killed_tree(self) -> None:
        """Block until every process signalled by :meth:`cancel` has exited (at most the grace period + 5 s).

        The launcher can exit, and the interpreter close its pipes, a moment before the interpreter
        itself is gone (seen under load); CANCELLED must mean the whole tree is dead. A zombie counts
        as exited: its parent (perhaps an init that does not reap) owns it, and it runs nothing.
        """
        deadline = time.monotonic() + self.grace_seconds + 5.0
        for proc in self._killed:
            while time.monotonic() < deadline:
                try:
                    if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.02)

    def _read_stdout(self) -> None:
        assert self._popen is not None and self._popen.stdout is not None and self._popen.stderr is not None
        err_reader = threading.Thread(target=self._read_stderr, name=f"{self.task}-stderr", daemon=True)
        err_reader.start()
        saw_error = saw_result = False
        for line in self._popen.stdout:
            event = _parse_line(line)
            if event is None:
                continue
            saw_error |= event.get("event") == "error"
            saw_result |= event.get("event") == "result"
            self._events.put(event)
        self.returncode = self._popen.wait()
        if self._cancel_requested:
            self._wait_for_killed_tree()
        err_reader.join()
        final = self._final_event(self.returncode, saw_error, saw_result)
        if final is not None:
            self._events.put(final)
        if self.returncode != 0:
            self._remove_orphaned_staging()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self._events.put(None)
        self._done.set()

    def _read_stderr(self) -> None:
        assert self._popen is not None and self._popen.stderr is not None
        for line in self._popen.stderr:
            line = line.rstrip("\n")
            if line.strip():
                self._stderr_tail.append(line)
                self._events.put({"event": "log", "level": "stderr", "message": line})

    def _final_event(self, code: int, saw_error: bool, saw_result: bool) -> dict[str, Any] | None:
        """The synthetic event that closes a run the worker did not close itself."""
        if code == 0 and saw_result:
            return None
        if saw_error:
            return None
        if self._cancel_requested:
            return {"event": "error", "kind": "cancelled", "message": "cancelled by the user"}
        if code == 0:
            return {"event": "error", "kind": "internal",
                    "message": f"{self.task} worker exited without reporting a result"}
        return {"event": "error", "kind": "internal", "message": self._crash_message(code)}

    def _crash_message(self, code: int) -> str:
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        lines = [ln for ln in self._stderr_tail if ln.strip()]
        detail = lines[-1].strip() if lines else "no error output"
        return f"{self.task} worker {how}: {detail}"

    def _remove_orphaned_staging(self) -> None:
        """Delete ``.<out>.partial-<pid>`` folders of dead workers (left behind by a hard kill)."""
        parent = self.out_dir.parent
        if not parent.is_dir():
            return
        for staging in parent.glob(f".{self.out_dir.name}.partial-*"):
            pid_text = staging.name.rsplit("-", 1)[-1]
            killed = {p.pid for p in self._killed}
            if pid_text.isdigit() and (int(pid_text) in killed or not psutil.pid_exists(int(pid_text))):
                shutil.rmtree(staging, ignore_errors=True)

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.fraction = float(event.get("fraction", self.fraction))
            self.stage = str(event.get("stage", self.stage))
            self.message = str(event.get("message", ""))
        elif kind == "result":
            self.manifest = Path(event["manifest"])
        elif kind == "error":
            self.error_kind = str(event.get("kind", "internal"))
            self.message = str(event.get("message", ""))

    def _settle(self) -> None:
        """The final state, set only once the worker has exited and its leftovers are removed.

        A cancel that lost the race against completion (result received) counts as finished.
        """
        if self.error_kind:
            self.state = State.CANCELLED if self.error_kind == "cancelled" else State.FAILED
        else:
            self.state = State.FINISHED
            self.fraction = 1.0


def _parse_line(line: str) -> dict[str, Any] | None:
    """A JSON event, or a ``log`` event for any other non-empty stdout line (e.g. a stray print)."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict) and "event" in event:
            return event
    return {"event": "log", "level": "stdout", "message": text}
