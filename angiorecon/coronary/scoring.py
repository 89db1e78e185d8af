"""Fast 3D scores of a coronary reconstruction against a reference mask (PPCAR-Net protocol, §5.1).

Dice on the reference grid, true clDice (Shit et al.), centerline Chamfer (sum of the two mean
nearest-neighbour distances between skeleton point sets, mm) and HD95, connected components.
Cheaper than ``metrics.evaluate_volumes`` (no meshes), so the benchmark can score every method.
``seen_by`` restricts scoring to the region a few-view method can reconstruct at all, which
separates reconstruction errors from vessels that leave a view's field of view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import ConeBeamGeometry, VolumeGrid
from ..metrics.evaluate import resample_to_grid, same_grid
from ..metrics.volume import cldice, dice, n_components, skeleton


def seen_by_every_view(geometry: ConeBeamGeometry, points: np.ndarray) -> np.ndarray:
    """(M,) bool: world ``points`` (M, 3) that project onto the detector of every view."""
    h, w = geometry.det_shape
    inside = np.ones(len(points), dtype=bool)
    for uv in geometry.project_points(points):
        inside &= (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
    return inside


def score_occupancy(pred: np.ndarray, pred_grid: VolumeGrid, ref_mask: np.ndarray, ref_grid: VolumeGrid,
                    seen_by: ConeBeamGeometry | None = None) -> dict[str, Any]:
    """Scores of ``pred`` (occupancy, threshold 0.5) against the binary ``ref_mask`` on ``ref_grid``.

    ``seen_by``: score only the voxels every view of this geometry sees (prediction and reference).
    """
    p = pred if same_grid(pred_grid, ref_grid) else resample_to_grid(pred.astype(np.float32), pred_grid, ref_grid)
    pm = p >= 0.5
    rm = np.asarray(ref_mask) != 0
    if seen_by is not None:
        ijk = np.argwhere(pm | rm)
        unseen = ijk[~seen_by_every_view(seen_by, ref_grid.index_to_world(ijk[:, ::-1]))]
        pm[tuple(unseen.T)] = rm[tuple(unseen.T)] = False
    out: dict[str, Any] = {"dice": dice(pm, rm)}
    out.update({k: float(v) for k, v in cldice(pm, rm).items()})
    out["components"] = n_components(pred >= 0.5)          # on the prediction's own grid (resampling breaks thin tubes)
    sp, sr = skeleton(pm), skeleton(rm)
    if sp.any() and sr.any():
        a = ref_grid.index_to_world(np.argwhere(sp)[:, ::-1])
        b = ref_grid.index_to_world(np.argwhere(sr)[:, ::-1])
        dab = cKDTree(b).query(a)[0]
        dba = cKDTree(a).query(b)[0]
        out["chamfer_mm"] = float(dab.mean() + dba.mean())
        out["hd95_mm"] = float(max(np.percentile(dab, 95), np.percentile(dba, 95)))
    else:
        out["chamfer_mm"] = out["hd95_mm"] = float("inf")
    return out
