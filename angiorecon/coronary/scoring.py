"""Fast 3D scores of a coronary reconstruction against a reference mask (PPCAR-Net protocol, §5.1).

Dice on the reference grid, true clDice (Shit et al.), centerline Chamfer (sum of the two mean
nearest-neighbour distances between skeleton point sets, mm) and HD95, connected components.
Cheaper than ``metrics.evaluate_volumes`` (no meshes), so the benchmark can score every method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import VolumeGrid
from ..metrics.evaluate import resample_to_grid, same_grid
from ..metrics.volume import cldice, dice, n_components, skeleton


def score_occupancy(pred: np.ndarray, pred_grid: VolumeGrid, ref_mask: np.ndarray, ref_grid: VolumeGrid
                    ) -> dict[str, Any]:
    """Scores of ``pred`` (occupancy, threshold 0.5) against the binary ``ref_mask`` on ``ref_grid``."""
    p = pred if same_grid(pred_grid, ref_grid) else resample_to_grid(pred.astype(np.float32), pred_grid, ref_grid)
    pm = p >= 0.5
    rm = np.asarray(ref_mask) != 0
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
