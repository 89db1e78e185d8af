"""PSNR / SSIM for projection stacks (2D, per frame) and volumes (3D).

2D is reported twice: the anchors' way (each frame min–max normalised to [0, 1], peak 1 —
``dsa_reconstruction.md`` §8) and without normalisation (peak = the reference stack's range,
prediction untouched), because per-image normalisation hides intensity-scale errors. For volumes,
global SSIM is dominated by empty background (an all-zero prediction scores ≈ 1), so a
vessel-region SSIM (mean of the SSIM map inside a reference mask) is offered as well.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> float:
    """10·log10(peak² / MSE); peak defaults to the reference's range. ∞ for identical images."""
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    peak = float(np.ptp(r)) if data_range is None else float(data_range)
    mse = float(np.mean((p - r) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(peak ** 2 / mse)) if peak > 0 else float("-inf")


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None, *,
         mask: np.ndarray | None = None, win_size: int = 7) -> float:
    """skimage SSIM (2D or 3D, 7-pixel window); with ``mask`` the mean of the SSIM map inside it."""
    from skimage.metrics import structural_similarity

    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    peak = float(np.ptp(r)) if data_range is None else float(data_range)
    peak = peak if peak > 0 else 1.0
    win = min(win_size, *[s if s % 2 else s - 1 for s in r.shape])
    if mask is None:
        return float(structural_similarity(p, r, data_range=peak, win_size=win))
    _, full = structural_similarity(p, r, data_range=peak, win_size=win, full=True)
    m = np.asarray(mask, dtype=bool)
    return float(full[m].mean()) if m.any() else float("nan")


def projection_metrics(pred: np.ndarray, ref: np.ndarray, frames: np.ndarray | None = None) -> dict[str, Any]:
    """Per-frame and mean 2D PSNR/SSIM of stacks ``[frames, rows, cols]``, normalised and raw."""
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if p.ndim == 2:
        p, r = p[None], r[None]
    if p.shape != r.shape:
        raise ValueError(f"stacks differ in shape: {p.shape} vs {r.shape}")
    idx = np.arange(len(r)) if frames is None else np.asarray(frames, dtype=np.int64)
    peak = float(np.ptp(r))
    rows = {"psnr_minmax": [], "ssim_minmax": [], "psnr_raw": [], "ssim_raw": []}
    for i in idx:
        pn, rn = minmax(p[i]), minmax(r[i])
        rows["psnr_minmax"].append(psnr(pn, rn, 1.0))
        rows["ssim_minmax"].append(ssim(pn, rn, 1.0))
        rows["psnr_raw"].append(psnr(p[i], r[i], peak))
        rows["ssim_raw"].append(ssim(p[i], r[i], peak))
    out: dict[str, Any] = {k: float(np.mean(v)) for k, v in rows.items()}
    out["frames"] = idx.tolist()
    out["per_frame"] = rows
    out["raw_peak"] = peak
    return out


def volume_metrics(pred: np.ndarray, ref: np.ndarray, *, vessel_mask: np.ndarray | None = None,
                   win_size: int = 7) -> dict[str, float]:
    """3D PSNR/SSIM (peak = reference range), plus SSIM inside ``vessel_mask`` when given
    (one SSIM map serves both)."""
    from skimage.metrics import structural_similarity

    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    peak = float(np.ptp(r)) or 1.0
    win = min(win_size, *[s if s % 2 else s - 1 for s in r.shape])
    out = {"psnr_3d": psnr(p, r)}
    if vessel_mask is None:
        out["ssim_3d"] = float(structural_similarity(p, r, data_range=peak, win_size=win))
        return out
    mssim, full = structural_similarity(p, r, data_range=peak, win_size=win, full=True)
    m = np.asarray(vessel_mask, dtype=bool)
    out["ssim_3d"] = float(mssim)
    out["ssim_3d_vessels"] = float(full[m].mean()) if m.any() else float("nan")
    return out
