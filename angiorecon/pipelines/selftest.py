"""``selftest``: exercise the worker protocol end to end without any heavy computation.

Used by the Slicer modules to check that the engine can be launched ("Test engine" button) and by
the tests of the runner: it reports progress in steps, writes one small output per step, can be
made slow enough to cancel, and can be made to fail like a bad input or a bug would.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import BadInput
from ..worker import TaskContext

HELP = "check the engine and the worker protocol (progress, cancel, outputs, errors)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=5, help="number of progress steps")
    p.add_argument("--step-seconds", type=float, default=0.1, help="time per step")
    p.add_argument("--fail", choices=("none", "bad-input", "internal"), default="none",
                   help="fail on purpose half way (to test error reporting)")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"steps": args.steps, "step_seconds": args.step_seconds, "fail": args.fail}


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    steps = int(job.get("steps", 5))
    if steps < 1:
        raise BadInput(f"steps must be >= 1, got {steps}")
    delay = float(job.get("step_seconds", 0.1))
    fail = job.get("fail", "none")
    for i in range(steps):
        ctx.progress(i / steps, "selftest", f"step {i + 1}/{steps}")
        if fail != "none" and i == steps // 2:
            if fail == "bad-input":
                raise BadInput("selftest was asked to fail with a bad-input error")
            raise RuntimeError("selftest was asked to fail with an internal error")
        time.sleep(delay)
        rel = f"steps/step_{i:03d}.txt"
        ctx.path(rel).write_text(f"step {i}\n")
    ctx.log(f"wrote {steps} step files")
    ctx.add_output("other", "steps", f"{steps} step files")
    ctx.extra["device_description"] = _describe(ctx.device)


def _describe(device: str) -> str:
    try:
        from ..device import device_description

        return device_description(device)
    except ImportError:  # torch missing: the protocol itself still works
        return device
