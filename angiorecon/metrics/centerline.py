"""Centerline metrics: completeness (small-vessel recall), overlap (precision), radius error,
centerline Chamfer/HD95 — all length-weighted on centerlines resampled at half a voxel.

A reference point counts as *found* when the predicted centerline passes within
r = max(reference radius there, 1 voxel) of it; a predicted point is *correct* when it lies within
max(its own radius, 1 voxel) of the reference centerline. The tolerance follows the vessel: a
prediction anywhere inside the true lumen finds that stretch of vessel, and sub-voxel vessels are
judged at the resolution of the grid. Radius errors are taken at found reference points against
the nearest predicted point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..vessels.centerlines import CenterlineTree
from .surface import distance_summary


def resample_polyline(points: np.ndarray, radii: np.ndarray | None, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ≤ ``step`` mm along a polyline, interpolated radii, and the length each stands for."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    r = np.full(len(p), np.nan) if radii is None else np.asarray(radii, dtype=np.float64)
    if len(p) < 2:
        return p, r, np.zeros(len(p))
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    if total <= 0:
        return p[:1], r[:1], np.zeros(1)
    n = max(int(np.ceil(total / step)), 1)
    t = np.linspace(0.0, total, n + 1)
    q = np.stack([np.interp(t, s, p[:, c]) for c in range(3)], axis=1)
    rq = np.interp(t, s, r) if np.isfinite(r).all() else np.full(len(t), np.nan)
    w = np.full(len(t), total / n)
    w[0] = w[-1] = total / n / 2
    return q, rq, w


def tree_samples(tree: CenterlineTree, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [resample_polyline(b.points, b.radii, step) for b in tree.branches if len(b.points)]
    if not parts:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def centerline_metrics(pred: CenterlineTree, ref: CenterlineTree, *, voxel_mm: float | None = None) -> dict[str, Any]:
    """Completeness, overlap, their F1, radius errors and centerline CD/HD95 (mm)."""
    voxel = float(voxel_mm if voxel_mm is not None else ref.voxel_size)
    step = voxel / 2
    P, rp, wp = tree_samples(pred, step)
    R, rr, wr = tree_samples(ref, step)
    out: dict[str, Any] = {
        "tolerance": "max(local radius, 1 voxel)", "voxel_mm": voxel,
        "ref_length_mm": float(wr.sum()), "pred_length_mm": float(wp.sum()),
        "ref_branches": len(ref.branches), "pred_branches": len(pred.branches),
        "ref_bifurcations": ref.n_bifurcations, "pred_bifurcations": pred.n_bifurcations,
    }
    if len(P) == 0 or len(R) == 0:
        out.update(completeness=0.0 if len(R) else 1.0, overlap=0.0 if len(P) else 1.0, f1=0.0)
        return out
    d_r2p, j = cKDTree(P).query(R, workers=-1)
    d_p2r, _ = cKDTree(R).query(P, workers=-1)
    tol_r = np.fmax(np.nan_to_num(rr, nan=0.0), voxel)
    tol_p = np.fmax(np.nan_to_num(rp, nan=0.0), voxel)
    found = d_r2p <= tol_r
    correct = d_p2r <= tol_p
    comp = float(wr[found].sum() / wr.sum()) if wr.sum() > 0 else float(found.mean())
    ovl = float(wp[correct].sum() / wp.sum()) if wp.sum() > 0 else float(correct.mean())
    out.update(completeness=comp, overlap=ovl, f1=2 * comp * ovl / (comp + ovl) if comp + ovl > 0 else 0.0)
    err = rp[j[found]] - rr[found]
    err = err[np.isfinite(err)]
    if err.size:
        out.update(radius_mae_mm=float(np.abs(err).mean()), radius_bias_mm=float(err.mean()),
                   radius_median_abs_mm=float(np.median(np.abs(err))), radius_mae_voxels=float(np.abs(err).mean() / voxel))
    s = distance_summary(d_p2r, d_r2p)
    out.update(cd_sum=s["cd_sum"], cd_mean=s["cd_mean"], hd95=s["hd95"])
    return out
