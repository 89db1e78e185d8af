"""The one background-worker protocol shared by every task and all three Slicer modules.

``python -m angiorecon <task> --job job.json --out DIR`` (or the same task with CLI arguments)
runs one task and

* prints one JSON object per line on stdout when ``--events json`` (the default with ``--job``)::

      {"event": "progress", "fraction": 0.42, "stage": "fdk", "message": "view 12/30"}
      {"event": "log", "level": "info", "message": "..."}
      {"event": "result", "manifest": "DIR/manifest.json"}
      {"event": "error", "kind": "bad-input|out-of-memory|device|cancelled|internal", "message": "..."}

  and a progress bar on stderr otherwise (``--events console``);
* stops at the next safe point on SIGTERM/SIGINT and exits with code 130;
* writes all outputs into a hidden staging folder next to ``DIR`` and renames it to ``DIR`` only
  when the task has finished and ``manifest.json`` is complete, so ``DIR`` never holds a
  half-written result;
* exits with the codes documented in :mod:`angiorecon.errors`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from . import __version__
from .errors import AngioError, BadInput, Cancelled

MANIFEST_NAME = "manifest.json"

#: Roles a manifest output may have (brief §3, issue 7).
OUTPUT_ROLES = (
    "volume", "vessel_mask", "segmentation", "mesh", "centerlines", "sequence", "time_to_peak",
    "renderings", "metrics", "preview", "projections", "dataset", "dicom", "model", "images",
    "table", "truth", "log", "overlays", "other",
)


class CancelToken:
    """Set by the signal handler; checked by tasks at safe points."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.signal_name = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if a cancel was requested."""
        if self._event.is_set():
            raise Cancelled(f"cancelled by {self.signal_name}")


class Reporter:
    """Emits progress/log events as JSON lines (worker mode) or a console progress bar."""

    def __init__(self, mode: str = "console", stream: TextIO | None = None,
                 cancel: CancelToken | None = None) -> None:
        if mode not in ("json", "console", "quiet"):
            raise ValueError(f"unknown events mode {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stdout
        self.cancel = cancel or CancelToken()
        self._lock = threading.Lock()
        self._bar: Any = None
        self._stage = ""

    # -- low level -------------------------------------------------------------------------
    def emit(self, event: str, **payload: Any) -> None:
        if self.mode != "json":
            return
        line = json.dumps({"event": event, **payload}, default=_json_default)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    # -- public API used by tasks ---------------------------------------------------------
    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        """Report overall progress in [0, 1]; also a cancellation safe point."""
        self.cancel.check()
        fraction = float(min(max(fraction, 0.0), 1.0))
        if self.mode == "json":
            self.emit("progress", fraction=round(fraction, 4), stage=stage, message=message)
        elif self.mode == "console":
            self._console_bar(fraction, stage, message)

    def log(self, message: str, level: str = "info") -> None:
        if self.mode == "json":
            self.emit("log", level=level, message=message)
        elif self.mode == "console":
            self._close_bar()
            print(f"[{level}] {message}", file=sys.stderr, flush=True)

    def stage(self, name: str, start: float, end: float) -> "StageProgress":
        """Sub-range of the overall progress, so nested steps report 0..1 locally."""
        return StageProgress(self, name, start, end)

    def sub(self, start: float, end: float) -> "Reporter":
        """A reporter whose 0..1 maps onto ``[start, end]`` of this one (to run a task inside a task)."""
        return _SubReporter(self, start, end)

    def close(self) -> None:
        self._close_bar()

    # -- console bar ------------------------------------------------------------------------
    def _console_bar(self, fraction: float, stage: str, message: str) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=1000, file=sys.stderr, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        self._bar.n = int(fraction * 1000)
        desc = stage if not message else f"{stage}: {message}"
        if desc != self._stage:
            self._bar.set_description_str(desc[:60], refresh=False)
            self._stage = desc
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = ""


class _SubReporter(Reporter):
    def __init__(self, parent: Reporter, start: float, end: float) -> None:
        super().__init__(parent.mode, parent.stream, parent.cancel)
        self._parent, self._start, self._end = parent, start, end

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        f = min(max(fraction, 0.0), 1.0)
        self._parent.progress(self._start + (self._end - self._start) * f, stage, message)

    def log(self, message: str, level: str = "info") -> None:
        self._parent.log(message, level)

    def close(self) -> None:
        return None


@dataclass
class StageProgress:
    """Maps local progress of one stage onto ``[start, end]`` of the overall bar."""

    reporter: Reporter
    name: str
    start: float
    end: float

    def __call__(self, fraction: float, message: str = "") -> None:
        self.reporter.progress(self.start + (self.end - self.start) * fraction, self.name, message)

    def check(self) -> None:
        self.reporter.cancel.check()


@dataclass
class TaskContext:
    """What a task receives: where to write, how to report, which device, and the manifest."""

    out: Path                    #: staging folder; becomes the user's ``--out`` on success
    final_out: Path              #: the folder the user asked for (for messages only)
    reporter: Reporter
    device: str = "cpu"
    outputs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        self.reporter.progress(fraction, stage, message)

    def log(self, message: str, level: str = "info") -> None:
        self.reporter.log(message, level)

    def check_cancelled(self) -> None:
        self.reporter.cancel.check()

    def path(self, relative: str) -> Path:
        """Path inside the staging output folder (parents created)."""
        p = self.out / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_output(self, role: str, relative: str, description: str = "", **meta: Any) -> None:
        """Record an output file (relative to the output folder) with its role for the manifest."""
        if role not in OUTPUT_ROLES:
            raise ValueError(f"unknown output role {role!r}")
        if not (self.out / relative).exists():
            raise FileNotFoundError(f"task declared output {relative!r} but did not write it")
        self.outputs.append({"role": role, "path": relative, "description": description, **meta})

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)


TaskFunction = Callable[[dict[str, Any], TaskContext], None]


def versions() -> dict[str, str]:
    """Versions of the engine and its main dependencies, for the manifest."""
    out = {"angiorecon": __version__, "python": platform.python_version()}
    for mod in ("numpy", "torch", "scipy", "numba", "SimpleITK", "pydicom"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = str(m.__version__)
    return out


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)


@contextmanager
def staged_output(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``out``; move it to ``out`` only on success.

    On any exception (including cancellation) the staging folder is deleted and ``out`` is left as
    it was, so a failed or cancelled run leaves no partial outputs.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadInput(f"--out {out} already exists and is not empty; choose a new folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def install_cancel_handlers(token: CancelToken) -> None:
    """SIGTERM/SIGINT set the cancel token; the task stops at its next safe point."""

    def handler(signum: int, _frame: Any) -> None:
        token.cancel(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_task(name: str, func: TaskFunction, job: dict[str, Any], out: Path, *,
             device: str = "auto", events: str = "console", overwrite: bool = False,
             stream: TextIO | None = None) -> int:
    """Run one task under the protocol and return the process exit code.

    Never raises for expected failures: they become an ``error`` event (and a one-line message on
    stderr in console mode) plus the documented exit code.
    """
    from .device import resolve_device

    token = CancelToken()
    if threading.current_thread() is threading.main_thread():
        install_cancel_handlers(token)
    reporter = Reporter(events, stream=stream, cancel=token)
    t0 = time.perf_counter()
    try:
        dev = resolve_device(device)
        with staged_output(out, overwrite=overwrite) as staging:
            ctx = TaskContext(out=staging, final_out=Path(out).absolute(), reporter=reporter, device=dev)
            reporter.progress(0.0, "start", f"{name} on {dev}")
            func(job, ctx)
            token.check()
            ctx.timings["total"] = round(time.perf_counter() - t0, 4)
            manifest = {
                "task": name,
                "job": job,
                "outputs": ctx.outputs,
                "device": dev,
                "versions": versions(),
                "timings": ctx.timings,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **ctx.extra,
            }
            write_json_atomic(staging / MANIFEST_NAME, manifest)
        reporter.progress(1.0, "done")
        reporter.close()
        reporter.emit("result", manifest=str(Path(out).absolute() / MANIFEST_NAME))
        return 0
    except AngioError as exc:
        return _fail(reporter, exc.kind, str(exc), exc.exit_code)
    except MemoryError:
        return _fail(reporter, "out-of-memory", f"{name}: ran out of memory", 3)
    except KeyboardInterrupt:
        return _fail(reporter, "cancelled", "cancelled by SIGINT", 130)
    except Exception as exc:  # noqa: BLE001 - the protocol turns bugs into an error event
        traceback.print_exc(file=sys.stderr)
        return _fail(reporter, "internal", f"{type(exc).__name__}: {exc}", 1)


def _fail(reporter: Reporter, kind: str, message: str, code: int) -> int:
    reporter.close()
    if reporter.mode == "json":
        reporter.emit("error", kind=kind, message=message)
    print(f"error ({kind}): {message}", file=sys.stderr, flush=True)
    return code
