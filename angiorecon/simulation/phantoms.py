"""Analytic phantoms with closed-form line integrals (capped cylinders, ellipsoids).

Used where exact projections matter: projector accuracy tests, the RTK peer comparisons and the
projector benchmark. Each shape can also be voxelised (with supersampling) on any grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..geometry import ConeBeamGeometry, VolumeGrid

@dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid of constant value: semi-axes along the columns of ``rotation``."""

    center: Sequence[float]
    semi_axes: Sequence[float]
    value: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def _quad(self) -> np.ndarray:
        r = np.asarray(self.rotation, dtype=np.float64)
        return r @ np.diag(1.0 / np.asarray(self.semi_axes, dtype=np.float64) ** 2) @ r.T

    def inside(self, pts: np.ndarray) -> np.ndarray:
        q = pts - np.asarray(self.center, dtype=np.float64)
        return np.einsum("...i,ij,...j->...", q, self._quad(), q) <= 1.0

    def chord(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Length of each line ``o + t d`` (unit ``d``, all t) inside the ellipsoid."""
        m = self._quad()
        q = origins - np.asarray(self.center, dtype=np.float64)
        a = np.einsum("ni,ij,nj->n", dirs, m, dirs)
        b = np.einsum("ni,ij,nj->n", dirs, m, q)
        c = np.einsum("ni,ij,nj->n", q, m, q) - 1.0
        disc = np.maximum(b * b - a * c, 0.0)
        return 2.0 * np.sqrt(disc) / a


@dataclass(frozen=True)
class Cylinder:
    """Solid capped cylinder of constant value from ``p0`` to ``p1`` with ``radius`` (a vessel segment)."""

    p0: Sequence[float]
    p1: Sequence[float]
    radius: float
    value: float = 1.0

    def _axis(self) -> tuple[np.ndarray, np.ndarray, float]:
        p0 = np.asarray(self.p0, dtype=np.float64)
        ax = np.asarray(self.p1, dtype=np.float64) - p0
        length = float(np.linalg.norm(ax))
        return p0, ax / length, length

    def inside(self, pts: np.ndarray) -> np.ndarray:
        p0, ax, length = self._axis()
        q = pts - p0
        h = q @ ax
        radial = np.sum(q * q, axis=-1) - h * h
        return (h >= 0) & (h <= length) & (radial <= self.radius ** 2)

    def chord(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        p0, ax, length = self._axis()
        q = origins - p0
        qa, da = q @ ax, dirs @ ax
        qp, dp = q - qa[:, None] * ax, dirs - da[:, None] * ax
        a = np.sum(dp * dp, axis=1)
        b = np.sum(dp * qp, axis=1)
        c = np.sum(qp * qp, axis=1) - self.radius ** 2
        disc = b * b - a * c
        ok = (a > 1e-15) & (disc > 0)
        root = np.sqrt(np.where(ok, disc, 0.0))
        safe_a = np.where(ok, a, 1.0)
        t0 = np.where(ok, (-b - root) / safe_a, np.where((a <= 1e-15) & (c <= 0), -np.inf, 0.0))
        t1 = np.where(ok, (-b + root) / safe_a, np.where((a <= 1e-15) & (c <= 0), np.inf, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            s0, s1 = (0.0 - qa) / da, (length - qa) / da
        par = np.abs(da) < 1e-15
        inside_slab = (qa >= 0) & (qa <= length)
        lo = np.where(par, np.where(inside_slab, -np.inf, np.inf), np.minimum(s0, s1))
        hi = np.where(par, np.where(inside_slab, np.inf, -np.inf), np.maximum(s0, s1))
        return np.maximum(np.minimum(t1, hi) - np.maximum(t0, lo), 0.0)


@dataclass(frozen=True)
class AnalyticPhantom:
    """Sum of analytic shapes (values add where shapes overlap)."""

    shapes: tuple

    def voxelize(self, grid: VolumeGrid, supersample: int = 3) -> np.ndarray:
        """Mean value over ``supersample³`` points per voxel (partial-volume, not point sampling)."""
        nz, ny, nx = grid.shape
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)  # (i, j, k) offsets
        out = np.zeros(grid.shape, np.float32)
        jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        for k in range(nz):
            ijk = np.stack([ii, jj, np.full_like(ii, k)], -1).reshape(-1, 1, 3) + sub[None]
            pts = grid.index_to_world(ijk.reshape(-1, 3)).reshape(ny * nx, -1, 3)
            acc = np.zeros(ny * nx)
            for s in self.shapes:
                acc += s.value * s.inside(pts).mean(axis=1)
            out[k] = acc.reshape(ny, nx)
        return out

    def line_integrals(self, geometry: ConeBeamGeometry) -> np.ndarray:
        """Exact ``[N, H, W]`` line integrals along source → pixel-centre lines."""
        h, w = geometry.det_shape
        out = np.zeros((geometry.n_views, h, w))
        for n in range(geometry.n_views):
            d = geometry.pixel_centers(n).reshape(-1, 3) - geometry.source[n]
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            o = np.repeat(geometry.source[n][None], d.shape[0], axis=0)
            out[n] = sum(s.value * s.chord(o, d) for s in self.shapes).reshape(h, w)
        return out


def vessel_phantom(scale: float = 1.0, value: float = 0.02) -> AnalyticPhantom:
    """A small vessel tree with an aneurysm, ``scale`` mm per unit (fits a ±40·scale mm box).

    ``value`` is the iodine attenuation (1/mm), of the order of the anchors' DSA volumes.
    """
    s = scale
    trunk = [(0, -30, -30), (4, -8, -12), (0, 6, 4), (-6, 14, 22)]
    shapes: list[Any] = [Cylinder(np.multiply(a, s), np.multiply(b, s), 3.0 * s, value)
                         for a, b in zip(trunk[:-1], trunk[1:])]
    shapes += [Cylinder(np.multiply((4, -8, -12), s), np.multiply((26, 2, -6), s), 1.8 * s, value),
               Cylinder(np.multiply((0, 6, 4), s), np.multiply((-24, 20, 8), s), 1.5 * s, value),
               Cylinder(np.multiply((-6, 14, 22), s), np.multiply((14, 26, 30), s), 1.2 * s, value),
               Ellipsoid(np.multiply((26, 2, -6), s), np.multiply((5, 4, 4), s), value)]
    return AnalyticPhantom(tuple(shapes))


# ---------------------------------------------------------------------------------------- task
