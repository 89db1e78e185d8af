"""Command line: ``angiorecon <task> [task arguments] --out DIR`` or ``--job job.json --out DIR``.

Every task is a module in :mod:`angiorecon.pipelines` with ``HELP``, ``add_arguments``,
``job_from_args`` and ``run``. The CLI only turns arguments into a job dictionary; the worker
(:func:`angiorecon.worker.run_task`) runs it, so a job written by a Slicer module and the same
command typed by a researcher take exactly the same path.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from . import __version__
from .device import DEVICE_CHOICES

#: task name → module (imported lazily so ``--help`` does not pay for torch).
TASKS: dict[str, str] = {
    "selftest": "angiorecon.pipelines.selftest",
    "evaluate": "angiorecon.pipelines.evaluate",
    "convert": "angiorecon.pipelines.convert",
    "ddsa": "angiorecon.pipelines.ddsa",
    "ddsa-train": "angiorecon.pipelines.ddsa_train",
    "simulate": "angiorecon.pipelines.simulate",
    "project": "angiorecon.pipelines.project",
    "reconstruct": "angiorecon.pipelines.reconstruct",
    "demo": "angiorecon.pipelines.demo",
    "coronary": "angiorecon.pipelines.coronary",
}


def register_task(name: str, module: str) -> None:
    TASKS[name] = module


def _task_module(name: str) -> ModuleType:
    return importlib.import_module(TASKS[name])


def _add_common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("worker protocol")
    g.add_argument("--out", required=True, type=Path, help="output folder (created; must be new or empty)")
    g.add_argument("--job", type=Path, help="job.json with all task parameters (replaces task arguments)")
    g.add_argument("--device", default="auto", help=f"compute device: {'|'.join(DEVICE_CHOICES)} (default auto)")
    g.add_argument("--events", choices=("auto", "json", "console", "quiet"), default="auto",
                   help="json: JSON-lines events on stdout (default with --job); console: progress bar")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def build_parser(job_mode: bool = False, only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``only`` just that task's module is imported (a broken or slow
    import elsewhere cannot break it)."""
    parser = argparse.ArgumentParser(
        prog="angiorecon", description="3D vessel reconstruction from X-ray angiography.")
    parser.add_argument("--version", action="version", version=f"angiorecon {__version__}")
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name in ([only] if only in TASKS else TASKS):
        mod = _task_module(name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if not job_mode:
            mod.add_arguments(p)
        _add_common(p)
    return parser


def load_job(path: Path) -> dict[str, Any]:
    from .errors import BadInput

    try:
        job = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"job file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"job file {path} is not valid JSON: {exc}") from None
    if not isinstance(job, dict):
        raise BadInput(f"job file {path} must contain a JSON object, got {type(job).__name__}")
    return job


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import AngioError
    from .worker import run_task

    argv = list(sys.argv[1:] if argv is None else argv)
    job_mode = "--job" in argv or any(a.startswith("--job=") for a in argv)
    args = build_parser(job_mode, only=argv[0] if argv else None).parse_args(argv)
    mod = _task_module(args.task)
    events = args.events
    if events == "auto":
        events = "json" if job_mode else "console"
    try:
        job = load_job(args.job) if job_mode else mod.job_from_args(args)
    except AngioError as exc:
        print(f"error ({exc.kind}): {exc}", file=sys.stderr)
        if events == "json":
            print(json.dumps({"event": "error", "kind": exc.kind, "message": str(exc)}), flush=True)
        return exc.exit_code
    return run_task(args.task, mod.run, job, args.out, device=args.device, events=events,
                    overwrite=args.overwrite)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
