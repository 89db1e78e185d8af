"""Job dictionary of the ``coronary`` engine task (mirror of its command line)."""

from __future__ import annotations

import os
from typing import Any

from DSAReconstructionLib.jobs import absolute

FRAME_SELECTIONS = ("index", "cardiac-phase")
SEGMENTATION_METHODS = ("frangi", "learned", "masks")
CORONARY_METHODS = ("default", "autocar", "sdfcar", "neca", "epipolar")


def coronary_job(first_run: str | os.PathLike[str], second_run: str | os.PathLike[str], *,
                 first_frame: int = 0, second_frame: int = 0, frame_selection: str = "index",
                 segmentation: str = "frangi", method: str = "default") -> dict[str, Any]:
    """``coronary RUN1 RUN2 --frames F1 F2|--match-phase --segmentation S --method M``.

    Each view is an XA DICOM run and a frame index in it; with ``cardiac-phase`` the engine picks
    the frame pair at the same cardiac phase from frame times / ECG tags and the indices are ignored.
    """
    for name, value, allowed in (("frame selection", frame_selection, FRAME_SELECTIONS),
                                 ("segmentation", segmentation, SEGMENTATION_METHODS),
                                 ("method", method, CORONARY_METHODS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
    if min(first_frame, second_frame) < 0:
        raise ValueError("frame indices must be >= 0")
    return {"views": [{"path": absolute(first_run), "frame": int(first_frame)},
                      {"path": absolute(second_run), "frame": int(second_frame)}],
            "frame_selection": frame_selection, "segmentation": segmentation, "method": method}
