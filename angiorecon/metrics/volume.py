"""Overlap and topology metrics on binary masks sharing one grid.

* Dice.
* clDice exactly as Shit et al. (CVPR 2021): Tprec = |S(P) ∩ G| / |S(P)|, Tsens = |S(G) ∩ P| /
  |S(G)|, clDice = 2·Tprec·Tsens / (Tprec + Tsens) — skeleton *in the other mask*, not the Dice
  between skeletons that SDF-CAR reports (``coronary_two_view.md`` §5.1).
* Connected components (26-connectivity; ideal = 1 per vessel tree).
* Ot(d) of DeepCA in physical mm: voxels of each mask within d mm of the other, as a fraction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..geometry import VolumeGrid
from ..vessels.segmentation import label_components


def _check(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(pred) != 0, np.asarray(ref) != 0
    if p.shape != r.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {r.shape} (resample onto one grid first)")
    return p, r


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|P ∩ G| / (|P| + |G|); 1.0 when both are empty."""
    p, r = _check(pred, ref)
    s = p.sum() + r.sum()
    return float(2.0 * np.logical_and(p, r).sum() / s) if s else 1.0


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Topology-preserving curve skeleton (the thinning used for centerlines)."""
    from ..vessels.centerlines import thin

    return thin(np.asarray(mask) != 0)


def cldice(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """True clDice with its two halves: ``{"cldice", "tprec", "tsens"}``."""
    p, r = _check(pred, ref)
    sp, sr = skeleton(p), skeleton(r)
    tprec = float((sp & r).sum() / sp.sum()) if sp.any() else 0.0
    tsens = float((sr & p).sum() / sr.sum()) if sr.any() else 0.0
    cl = 2 * tprec * tsens / (tprec + tsens) if tprec + tsens > 0 else 0.0
    return {"cldice": float(cl), "tprec": tprec, "tsens": tsens}


def n_components(mask: np.ndarray) -> int:
    """Number of 26-connected components."""
    return int(label_components(mask)[1])


def overlap_within(pred: np.ndarray, ref: np.ndarray, grid: VolumeGrid,
                   d_mm: float | Sequence[float]) -> dict[str, float] | list[dict[str, float]]:
    """DeepCA's Ot(d) in mm: TPR = ref voxels within d of a pred voxel, TPM = pred voxels within d
    of a ref voxel, Ot = (TPM + TPR) / (|P| + |G|). Nearest-voxel distances come from k-d trees
    of the (sparse) vessel voxels in world mm, so anisotropic and oblique grids are handled and
    nothing scales with the size of the empty volume; a list of distances shares the queries."""
    from scipy.spatial import cKDTree

    p, r = _check(pred, ref)
    ds = [float(d_mm)] if np.isscalar(d_mm) else [float(d) for d in d_mm]
    pw = grid.index_to_world(np.argwhere(p)[:, ::-1])
    rw = grid.index_to_world(np.argwhere(r)[:, ::-1])
    inf = float("inf")
    d_r = cKDTree(pw).query(rw, workers=-1)[0] if len(pw) and len(rw) else np.full(len(rw), inf)
    d_p = cKDTree(rw).query(pw, workers=-1)[0] if len(pw) and len(rw) else np.full(len(pw), inf)
    n = len(pw) + len(rw)
    res = []
    for d in ds:
        tpr, tpm = int((d_r <= d).sum()), int((d_p <= d).sum())
        res.append({"ot": (tpm + tpr) / n if n else 1.0, "recall": tpr / len(rw) if len(rw) else 1.0,
                    "precision": tpm / len(pw) if len(pw) else 1.0})
    return res[0] if np.isscalar(d_mm) else res
