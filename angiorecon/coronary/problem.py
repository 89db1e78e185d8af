"""The objects every coronary method shares: what goes in (views + 2D masks) and what comes out.

Every 3D method is a function ``reconstruct_<name>(problem, **options) -> CoronaryResult`` so the
``coronary`` task, the benchmark and the tests can swap methods without knowing their internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..geometry import ConeBeamGeometry, VolumeGrid
from ..vessels.centerlines import CenterlineTree

#: ``progress(fraction, message)`` callback used by long-running methods
Progress = Callable[[float, str], None]


@dataclass
class CoronaryProblem:
    """A few calibrated views of the same (static) coronary tree.

    ``masks`` are per-view vessel probabilities or binary masks in [0, 1], shape [views, rows, cols],
    aligned with ``geometry`` (one view per geometry entry, DICOM patient LPS, mm). ``images`` are the
    log-domain angiograms when available (``autocar`` weighs their line integrals), ``grid`` the region of
    interest the methods reconstruct on (world mm; [z, y, x] arrays).
    """

    geometry: ConeBeamGeometry
    masks: np.ndarray
    grid: VolumeGrid
    images: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.shape[0] != self.geometry.n_views:
            raise ValueError(f"masks must be [views={self.geometry.n_views}, rows, cols], got {self.masks.shape}")
        if tuple(self.masks.shape[1:]) != tuple(self.geometry.det_shape):
            raise ValueError(f"mask size {self.masks.shape[1:]} differs from the detector {self.geometry.det_shape}")
        if self.images is not None and self.images.shape != self.masks.shape:
            raise ValueError(f"images {self.images.shape} and masks {self.masks.shape} differ in shape")


@dataclass
class CoronaryResult:
    """A method's answer: occupancy in [0, 1] on ``grid`` (threshold 0.5 = lumen), optional tree."""

    occupancy: np.ndarray
    grid: VolumeGrid
    tree: CenterlineTree | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def mask(self) -> np.ndarray:
        return self.occupancy >= 0.5
