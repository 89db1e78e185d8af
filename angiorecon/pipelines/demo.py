"""``demo``: simulate a static analytic vessel phantom, reconstruct it from 30 views with FDK and SART.

The phantom is a handful of analytic shapes (capped cylinders as vessel segments, an ellipsoid as
an aneurysm) whose line integrals are known in closed form, so the simulated projections are exact
and the reconstructions can be scored against the true volume. It is written as a VPAL/4DRGS
dataset folder (``transforms.json`` + ``proj.nii.gz``), then reconstructed through the same
method registry as ``reconstruct``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid
from ..worker import TaskContext

HELP = "simulate an analytic vessel phantom and reconstruct it from 30 views with FDK and SART"


# ---------------------------------------------------------------------------------------- phantom
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
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=96, help="volume voxels per side (default 96)")
    p.add_argument("--frames", type=int, default=133, help="frames of the simulated 200° run (default 133)")
    p.add_argument("--views", type=int, default=30, help="views used for reconstruction (default 30)")
    p.add_argument("--detector", type=int, default=128, help="detector pixels per side (default 128)")
    p.add_argument("--sart-iterations", type=int, default=10, help="SART iterations (default 10)")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"size": args.size, "frames": args.frames, "views": args.views, "detector": args.detector,
            "sart_iterations": args.sart_iterations}


def _scores(rec: np.ndarray, truth: np.ndarray, value: float) -> dict[str, float]:
    """Relative RMSE, PSNR (peak = vessel value) and Dice of the half-value vessel masks."""
    mse = float(np.mean((rec - truth) ** 2))
    a, b = rec > 0.5 * value, truth > 0.5 * value
    return {"relative_rmse": float(np.sqrt(mse) / np.sqrt(np.mean(truth ** 2))),
            "psnr_db": float(10 * np.log10(value ** 2 / max(mse, 1e-30))),
            "dice": float(2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1))}


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    import json

    from ..formats.dataset import DSADataset, write_dataset
    from ..formats.volume import write_volume
    from .reconstruct import reconstruct, write_mip_png

    size, frames, views, det = (int(job.get(k, d)) for k, d in
                                (("size", 96), ("frames", 133), ("views", 30), ("detector", 128)))
    if size < 16 or det < 16 or frames < 2 or not 1 <= views <= frames:
        raise BadInput(f"need size >= 16, detector >= 16, frames >= 2 and 1 <= views <= frames; got {job}")
    value = 0.02
    voxel = 80.0 / size                      # the phantom spans about ±40 mm at scale 1
    grid = VolumeGrid.centered((size, size, size), voxel)
    dso, dsd = 750.0, 1200.0
    pitch = 1.15 * 80.0 * np.sqrt(2) * dsd / dso / det   # detector covers the grid's diagonal, magnified
    geometry = ConeBeamGeometry.circular(np.linspace(0, np.deg2rad(200), frames), dso, dsd, (det, det), pitch,
                                         times=np.arange(frames) / frames)
    phantom = vessel_phantom(1.0, value)
    ctx.progress(0.02, "simulate", "phantom")
    with ctx.timed("simulate"):
        truth = phantom.voxelize(grid, supersample=2)
        proj = phantom.line_integrals(geometry).astype(np.float32)
    write_dataset(ctx.path("dataset"), DSADataset(geometry, grid, projections=proj,
                                                  extra={"source": "angiorecon demo: analytic vessel phantom"}))
    ctx.add_output("dataset", "dataset", f"simulated {frames}-frame 200° run (transforms.json + proj.nii.gz)")
    write_volume(ctx.path("phantom.nii.gz"), truth, grid)
    ctx.add_output("truth", "phantom.nii.gz", "true attenuation (1/mm)")
    ds = DSADataset(geometry, grid, projections=proj)
    metrics: dict[str, Any] = {"views": views, "frames": frames, "volume_shape": [size] * 3, "voxel_mm": voxel}
    params = {"fdk": {}, "sart": {"iterations": int(job.get("sart_iterations", 10)), "subsets": 5}}
    for i, method in enumerate(("fdk", "sart")):
        stage = ctx.reporter.stage(method, 0.2 + 0.35 * i, 0.55 + 0.35 * i)
        with ctx.timed(method):
            vol = reconstruct(ds, method, views, params[method], ctx, lambda f, m="": stage(f, m))
        write_volume(ctx.path(f"{method}.nii.gz"), vol, grid)
        ctx.add_output("volume", f"{method}.nii.gz", f"{method} reconstruction from {views} views")
        write_mip_png(ctx.path(f"{method}_mip.png"), vol)
        ctx.add_output("preview", f"{method}_mip.png", f"{method} maximum-intensity projections")
        metrics[method] = {**_scores(vol, truth, value), "seconds": ctx.timings[method]}
        ctx.log(f"{method}: relative RMSE {metrics[method]['relative_rmse']:.3f}, PSNR "
                f"{metrics[method]['psnr_db']:.1f} dB, Dice {metrics[method]['dice']:.3f}, "
                f"{ctx.timings[method]:.1f} s")
    write_mip_png(ctx.path("phantom_mip.png"), truth)
    ctx.add_output("preview", "phantom_mip.png", "phantom maximum-intensity projections")
    ctx.path("metrics.json").write_text(json.dumps(metrics, indent=1))
    ctx.add_output("metrics", "metrics.json", "reconstructions vs the phantom")
    ctx.extra["metrics"] = metrics
