"""Angle/time coverage of a rotational run: which C-arm angles the chosen views sample.

Reads only the run's geometry through the engine (no projections are reconstructed), so the panel
can show the plot before Apply. Imports the engine lazily: it needs the engine's dependencies,
which are installed on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class RunCoverage:
    angles_deg: np.ndarray      #: C-arm angle of every frame (unwrapped, about the patient axis)
    times_s: np.ndarray | None  #: acquisition time of every frame, if known
    chosen: np.ndarray          #: indices of the frames the reconstruction will use


def rotation_angles_deg(sources: np.ndarray) -> np.ndarray:
    """C-arm angle of each frame (degrees, unwrapped, about the patient axis z) from source positions."""
    src = np.asarray(sources, dtype=float).reshape(-1, 3)
    return np.degrees(np.unwrap(np.arctan2(src[:, 1], src[:, 0])))


def run_geometry(inputs: Sequence[str | os.PathLike[str]]):
    """The :class:`angiorecon.geometry.ConeBeamGeometry` of a dataset folder or DICOM XA study."""
    from angiorecon.formats.dataset import TRANSFORMS, read_dataset

    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and (paths[0] / TRANSFORMS).is_file():
        return read_dataset(paths[0], load_raw=False).geometry
    from angiorecon.formats.xa_study import load_study, select_dsa

    return select_dsa(load_study(paths).runs).geometry


def run_coverage(inputs: Sequence[str | os.PathLike[str]], views: int | Sequence[int] | None) -> RunCoverage:
    """Angles and times of every frame of the run, and the views ``reconstruct`` will pick."""
    from angiorecon.geometry import select_views

    geometry = run_geometry(inputs)
    return RunCoverage(rotation_angles_deg(geometry.source),
                       None if geometry.times is None else np.asarray(geometry.times, dtype=float),
                       select_views(geometry.n_views, views))
