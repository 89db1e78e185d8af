"""Job dictionaries of the engine tasks, built from what the user chose in a module panel.

A job is exactly what the task's ``job_from_args`` builds from its command line (see
``angiorecon/pipelines/<task>.py``), so a run started in Slicer and the same command typed in a
terminal take the same path. Paths are absolute because the worker runs in its own folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

#: reconstruction methods and presets offered by the panel (``reconstruct --method/--preset``).
RECONSTRUCTION_METHODS = ("default", "fdk", "sart", "vpal", "4drgs")
PRESETS = ("fast", "paper")
DEVICES = ("auto", "cpu", "cuda")
#: output roles each "load" switch of a panel brings into the scene.
LOAD_GROUPS = {
    "volume": ("volume", "time_to_peak"),
    "segmentation": ("vessel_mask", "segmentation"),
    "mesh": ("mesh",),
    "centerlines": ("centerlines",),
    "sequences": ("sequence", "projections", "renderings", "images"),
    "metrics": ("metrics", "table"),
}


def absolute(path: str | os.PathLike[str]) -> str:
    return str(Path(path).expanduser().absolute())


def parse_view_list(text: str) -> list[int]:
    """``"0, 5, 10-14"`` → ``[0, 5, 10, 11, 12, 13, 14]`` (sorted, unique); raises ValueError."""
    views: set[int] = set()
    for part in filter(None, (p.strip() for p in re.split(r"[,\s;]+", text))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"view list: {part!r} is not a frame number or a range like 10-14")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"view list: range {part!r} runs backwards")
        views.update(range(first, last + 1))
    if not views:
        raise ValueError("view list is empty")
    return sorted(views)


def roles_to_load(switches: dict[str, bool]) -> list[str]:
    """Manifest roles to load for the panel's ``load...`` check boxes (keys of :data:`LOAD_GROUPS`)."""
    return [role for group, on in switches.items() if on for role in LOAD_GROUPS[group]]


def selftest_job(steps: int = 5, step_seconds: float = 0.1) -> dict[str, Any]:
    """The engine check run by the "Test engine" button and the modules' self-tests."""
    return {"steps": int(steps), "step_seconds": float(step_seconds), "fail": "none"}


def reconstruct_job(inputs: Iterable[str | os.PathLike[str]], *, method: str = "default",
                    views: int | Sequence[int] = 30, preset: str = "fast",
                    reference: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``reconstruct INPUT... --method M --views K|LIST --preset P [--reference FILE]``.

    ``inputs``: DICOM XA files/folders (fill and mask runs, or a subtracted run) or one VPAL/4DRGS
    dataset folder. ``views``: K views chosen uniformly over the run, or explicit frame indices.
    """
    if method not in RECONSTRUCTION_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(RECONSTRUCTION_METHODS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    paths = [absolute(p) for p in inputs]
    if not paths:
        raise ValueError("reconstruction needs at least one input file or folder")
    view_spec: int | list[int] = int(views) if isinstance(views, int) else sorted(int(v) for v in views)
    return {"inputs": paths, "method": method, "views": view_spec, "preset": preset,
            "reference": absolute(reference) if reference else None}


def convert_job(inputs: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
    """``convert INPUT...``: DICOM XA study → VPAL/4DRGS dataset folder."""
    return {"inputs": [absolute(p) for p in inputs]}
