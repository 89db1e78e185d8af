"""What every dynamic reconstruction method consumes and returns.

Inputs are a :class:`ReconProblem` (measured DSA line integrals of the chosen views, their
geometry and acquisition times, the target grid). Every method returns a
:class:`DynamicResult`: attenuation sampled at a few time points on the target grid, from which
the maximum-opacification vessel volume, the time-average (the anchors' output), the
time-to-peak map and renderings of every frame of the run are derived the same way for all
methods, so outputs and metrics are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..geometry import ConeBeamGeometry, VolumeGrid

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str = "") -> None:
    return None


@dataclass
class ReconProblem:
    """Sparse-view dynamic reconstruction input (all arrays float32, numpy)."""

    projections: np.ndarray          #: [K, H, W] DSA line integrals of the training views (≥ 0)
    geometry: ConeBeamGeometry       #: geometry of those K views
    times: np.ndarray                #: (K,) acquisition times normalised to [0, 1]
    grid: VolumeGrid                 #: target volume grid
    device: str = "cpu"
    seed: int = 0
    progress: Progress = _no_progress
    check_cancelled: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.projections = np.ascontiguousarray(self.projections, dtype=np.float32)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        k = self.projections.shape[0]
        if self.geometry.n_views != k or self.times.size != k:
            raise ValueError(f"{k} projections, {self.geometry.n_views} views, {self.times.size} times")


@dataclass
class DynamicResult:
    """Attenuation μ(x, t) sampled at ``times`` on the target grid (``frames[T, z, y, x]``)."""

    times: np.ndarray                #: (T,) increasing, in [0, 1]
    frames: np.ndarray               #: [T, z, y, x] float32 attenuation (1/mm)
    grid: VolumeGrid
    info: dict[str, Any] = field(default_factory=dict)
    static: np.ndarray | None = None #: optional time-independent volume (static methods)

    @classmethod
    def from_static(cls, volume: np.ndarray, grid: VolumeGrid, info: dict[str, Any] | None = None) -> "DynamicResult":
        v = np.asarray(volume, dtype=np.float32)
        return cls(np.array([0.0, 1.0]), np.stack([v, v]), grid, info or {}, static=v)

    @property
    def max_opacification(self) -> np.ndarray:
        """Per-voxel maximum over time: the 3D vessel volume (robust to late/brief filling)."""
        return self.static if self.static is not None else self.frames.max(axis=0)

    @property
    def time_average(self) -> np.ndarray:
        """The anchors' output (mean over time)."""
        return self.static if self.static is not None else self.frames.mean(axis=0)

    def time_to_peak(self) -> np.ndarray:
        """Normalised time of maximum attenuation per voxel (parabolic refinement between samples)."""
        if self.static is not None or self.frames.shape[0] < 3:
            return np.zeros(self.grid.shape, np.float32)
        f = self.frames
        k = np.argmax(f, axis=0)
        k = np.clip(k, 1, f.shape[0] - 2)
        take = lambda off: np.take_along_axis(f, (k + off)[None], axis=0)[0]  # noqa: E731
        y0, y1, y2 = take(-1), take(0), take(1)
        denom = y0 - 2 * y1 + y2
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (y0 - y2) / np.where(denom == 0, 1, denom), 0.0)
        shift = np.clip(shift, -0.5, 0.5)
        t = np.interp(k + shift, np.arange(self.times.size), self.times)
        return t.astype(np.float32)

    def volume_at(self, t: float) -> np.ndarray:
        """Linear interpolation of the sampled frames at time ``t``."""
        if self.static is not None:
            return self.static
        ts = self.times
        t = float(np.clip(t, ts[0], ts[-1]))
        j = int(np.clip(np.searchsorted(ts, t) - 1, 0, ts.size - 2))
        w = (t - ts[j]) / max(ts[j + 1] - ts[j], 1e-12)
        return ((1 - w) * self.frames[j] + w * self.frames[j + 1]).astype(np.float32)

    def render(self, geometry: ConeBeamGeometry, times: np.ndarray, progress: Progress = _no_progress) -> np.ndarray:
        """Project μ(·, t_i) for every view i of ``geometry`` → [N, H, W] (rendered run)."""
        from ..operators import forward_project

        times = np.asarray(times, dtype=np.float64).reshape(-1)
        out = np.empty((geometry.n_views, *geometry.det_shape), np.float32)
        for i in range(geometry.n_views):
            out[i] = forward_project(self.volume_at(times[i]), self.grid, geometry.subset([i]))[0]
            progress((i + 1) / geometry.n_views, f"rendering view {i + 1}/{geometry.n_views}")
        return out
