"""Job dictionary of the ``coronary`` engine task (keys as its ``job_from_args``)."""

from __future__ import annotations

import os
from typing import Any, Iterable

from DSAReconstructionLib.jobs import DEVICES, absolute, path_is_set

FRAME_SELECTIONS = ("index", "cardiac-phase")
SEGMENTATION_METHODS = ("learned", "frangi", "masks")
#: ``coronary --method`` choices ("default" is the engine's recommended method, autocar).
CORONARY_METHODS = ("default", "autocar", "sdfcar", "neca", "epipolar", "hull")


def coronary_job(first_run: str | os.PathLike[str], second_run: str | os.PathLike[str], *,
                 first_frame: int = 0, second_frame: int = 0,
                 third_run: str | os.PathLike[str] | None = None, third_frame: int = 0, frame_selection: str = "index",
                 segmentation: str = "learned", masks: Iterable[str | os.PathLike[str]] = (),
                 sidecars: Iterable[str | os.PathLike[str]] = (), method: str = "default",
                 voxel_mm: float | None = None, reference: str | os.PathLike[str] | None = None,
                 refine_pose: bool = False, intensity: bool = True, device: str = "auto") -> dict[str, Any]:
    """``coronary VIEW1 VIEW2 [VIEW3] [--frames F1 F2 [F3] | --match-phase] --segmentation S [--masks M1 M2
    [M3]] [--sidecar J1 J2 [J3]] --method M [--voxel V] [--reference REF] [--refine-pose] [--no-intensity]
    --device D``.

    Each view is an XA DICOM run (or single frame) and a frame index in it. ``third_run`` (optional)
    adds a view: two views leave the depth of vessels running along their epipolar planes open, and a
    third from an angle out of their plane fixes it. With ``cardiac-phase``
    the engine picks the pair at the same cardiac phase from frame times / ECG tags and the indices
    are ignored. ``masks``: one 2D vessel mask file per view (segmentation ``masks``, e.g. edited in
    the Segment Editor); ``sidecars``: per-view geometry JSON when the DICOM lacks it;
    ``refine_pose``: correct a few degrees / mm of error in the secondary views' DICOM geometry;
    ``intensity`` off: prune ghost branches from the masks alone, not also from the images' vessel
    line integrals (for images that are not log-domain attenuation).
    """
    for name, value, allowed in (("frame selection", frame_selection, FRAME_SELECTIONS),
                                 ("segmentation", segmentation, SEGMENTATION_METHODS),
                                 ("method", method, CORONARY_METHODS), ("device", device, DEVICES)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
    runs = [(first_run, first_frame), (second_run, second_frame)]
    if path_is_set(third_run):
        runs.append((third_run, third_frame))
    if min(frame for _run, frame in runs) < 0:
        raise ValueError("frame indices must be >= 0")
    n = len(runs)
    mask_paths = [absolute(m) for m in masks]
    if segmentation == "masks" and len(mask_paths) != n:
        raise ValueError(f"segmentation 'masks' needs one mask per view ({n}), got {len(mask_paths)}")
    sidecar_paths = [absolute(s) for s in sidecars]
    if sidecar_paths and len(sidecar_paths) != n:
        raise ValueError(f"give one geometry sidecar per view ({n}) or none, got {len(sidecar_paths)}")
    if voxel_mm is not None and not voxel_mm > 0:
        raise ValueError(f"voxel size must be > 0 mm, got {voxel_mm}")
    job: dict[str, Any] = {"views": [{"path": absolute(run), "frame": int(frame)} for run, frame in runs],
                           "frame_selection": frame_selection, "segmentation": segmentation, "method": method,
                           "device": device}
    # optional keys only when given, as the task's job_from_args writes them
    if mask_paths:
        job["masks"] = mask_paths
    if sidecar_paths:
        job["sidecars"] = sidecar_paths
    if voxel_mm is not None:
        job["voxel_mm"] = float(voxel_mm)
    if reference:
        job["reference"] = absolute(reference)
    if refine_pose:
        job["refine_pose"] = True
    if not intensity:
        job["intensity"] = False
    return job
