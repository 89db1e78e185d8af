"""Analytic vessel shapes for the segmentation / surface / centerline / metric tests.

Tubes are unions of capsules (segment + radius, linearly tapered): the medial axis of a capsule
is its segment, so the true centerline and radius of every voxelised shape are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from angiorecon.geometry import VolumeGrid


@dataclass
class Tube:
    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0: float
    r1: float | None = None

    def signed_distance(self, x: np.ndarray) -> np.ndarray:
        """Distance to the tube surface (negative inside) for points x (..., 3)."""
        a, b = np.asarray(self.p0, float), np.asarray(self.p1, float)
        ab = b - a
        t = np.clip(((x - a) @ ab) / (ab @ ab), 0.0, 1.0)
        r = self.r0 + t * ((self.r1 if self.r1 is not None else self.r0) - self.r0)
        return np.linalg.norm(x - (a + t[..., None] * ab), axis=-1) - r

    def centerline(self, n: int = 50) -> tuple[np.ndarray, np.ndarray]:
        t = np.linspace(0, 1, n)
        pts = np.asarray(self.p0, float) + t[:, None] * (np.asarray(self.p1, float) - np.asarray(self.p0, float))
        r1 = self.r1 if self.r1 is not None else self.r0
        return pts, self.r0 + t * (r1 - self.r0)


def signed_distance(tubes: list[Tube], grid: VolumeGrid) -> np.ndarray:
    x = grid.voxel_centers()
    return np.min([t.signed_distance(x) for t in tubes], axis=0)


def voxelise(tubes: list[Tube], grid: VolumeGrid) -> np.ndarray:
    """Binary mask: voxel centres inside any tube."""
    return signed_distance(tubes, grid) <= 0


def intensity(tubes: list[Tube], grid: VolumeGrid, *, peak: float = 1.0, noise: float = 0.0,
              offset: float = 0.0, seed: int = 0) -> np.ndarray:
    """Partial-volume image: linear ramp across one voxel at the surface (half max on it), + noise."""
    sd = signed_distance(tubes, grid) / float(grid.spacing.min())
    img = peak * np.clip(0.5 - sd, 0.0, 1.0) + offset
    if noise:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return img.astype(np.float32)


def y_tree() -> list[Tube]:
    """A trunk bifurcating into two children, one of which bifurcates again (2 bifurcations)."""
    j1 = (0.0, 0.0, 2.0)
    j2 = (6.0, 1.0, 11.0)
    return [
        Tube((0.0, 0.0, -13.0), j1, 2.5, 2.2),
        Tube(j1, j2, 1.8, 1.6),
        Tube(j1, (-9.0, -3.0, 12.0), 1.5, 1.2),
        Tube(j2, (13.0, 2.0, 16.0), 1.2, 1.0),
        Tube(j2, (4.0, 9.0, 18.0), 1.1, 1.0),
    ]


def y_tree_bifurcations() -> int:
    return 2
