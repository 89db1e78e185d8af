"""Job dictionaries of the engine tasks, built from what the user chose in a module panel.

A job is exactly what the task's ``job_from_args`` builds from its command line (see
``angiorecon/pipelines/<task>.py``; ``Testing/mrml/test_module_jobs.py`` compares both), so a run
started in Slicer and the same command typed in a terminal take the same path. Paths are absolute
because the worker runs in its own folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

#: ``reconstruct --method`` choices (the engine's ``METHODS``; kinetic is its default).
RECONSTRUCTION_METHODS = ("kinetic", "vpal", "4drgs", "fdk", "sart")
PRESETS = ("fast", "paper")
DEVICES = ("auto", "cpu", "cuda")
#: ``reconstruct --format`` choices.
VOLUME_FORMATS = ("nii.gz", "nrrd")
#: ``reconstruct --skip`` choices (outputs that cost time and can be left out).
SKIPPABLE_OUTPUTS = ("mesh", "centerlines", "renderings")
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


def path_is_set(path: str | os.PathLike[str] | None) -> bool:
    """False for no path and for an empty one (ctkPathLineEdit gives ``Path("")`` == ``Path(".")``)."""
    return path is not None and str(path) not in ("", ".")


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


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


def reconstruct_job(inputs: Iterable[str | os.PathLike[str]], *, method: str = "kinetic",
                    views: int | Sequence[int] | None = 30, preset: str | None = "fast",
                    reference: str | os.PathLike[str] | None = None, skip: Iterable[str] = (),
                    volume_format: str = "nii.gz", seed: int = 0, params: Mapping[str, Any] | None = None,
                    sid: float | None = None, sod: float | None = None,
                    voxel_size: float | None = None) -> dict[str, Any]:
    """``reconstruct INPUT... --method M [--views K | --view-list I,J] [--preset P] [--reference F]
    [--skip A,B] --format F --seed S [--param K=V ...] [--sid --sod --voxel-size]``.

    ``inputs``: DICOM XA files/folders (fill and mask runs, or a subtracted run) or one VPAL/4DRGS
    dataset folder. ``views``: K views chosen uniformly over the run, explicit frame indices, or
    None for every frame. ``params``: method parameters (``--param``), e.g. ``{"iterations": 20}``.
    """
    _check_choice("method", method, RECONSTRUCTION_METHODS)
    if preset is not None:
        _check_choice("preset", preset, PRESETS)
    _check_choice("volume format", volume_format, VOLUME_FORMATS)
    skipped = list(skip)
    for item in skipped:
        _check_choice("output to skip", item, SKIPPABLE_OUTPUTS)
    paths = [absolute(p) for p in inputs]
    if not paths:
        raise ValueError("reconstruction needs at least one input file or folder")
    view_spec: int | list[int] | None
    if views is None or isinstance(views, int):
        view_spec = views
    else:
        view_spec = sorted(int(v) for v in views)
        if not view_spec:
            raise ValueError("the explicit view list is empty")
    all_params: dict[str, Any] = {} if preset is None else {"preset": preset}
    all_params["seed"] = int(seed)
    all_params.update(params or {})
    job: dict[str, Any] = {"inputs": paths, "method": method, "views": view_spec, "params": all_params,
                           "format": volume_format, "skip": skipped}
    if reference:
        job["reference"] = absolute(reference)
    overrides = {k: float(v) for k, v in (("sid", sid), ("sod", sod)) if v is not None}
    if overrides:
        job["overrides"] = overrides
    if voxel_size is not None:
        job["voxel_size"] = float(voxel_size)
    return job
