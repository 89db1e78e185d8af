"""Vessel segmentation of a reconstructed volume without dataset-specific absolute thresholds.

The anchors mesh their volumes at a fixed iso-level (0.008 in 4DRGS units), which only works on
their own intensity scale. Here every level is derived from the volume itself
(``dsa_reconstruction.md`` §9 "Robustness"):

1. background level and noise from the median and the MAD of all voxels (vessels are a few % of
   the volume, so both describe the background);
2. a vessel level ``high`` by Otsu on the voxels that stand out of the noise (``> bg + k·σ``);
   everything above it is vessel;
3. thin vessels whose peak is lowered by partial volume / reconstruction blur are added back:
   voxels above ``low = max(bg + k·σ, ½·high)`` that are connected to a vessel voxel (hysteresis),
   at least half of the brightest value within a few voxels (a local half maximum, so their
   boundary sits at their own half maximum and streaks beside big vessels are not) *and* thin: at
   least half of their contrast comes from a structure narrower than that window (white top-hat),
   so broad low plateaus — the limited-angle smear beside a large vessel — are not added;
4. connected components: drop islands smaller than a fraction of the largest component unless they
   are a thick, elongated vessel piece (a vessel crossing the volume on its own).

Measured on 128³ FDK reconstructions of a simulated tree (``benchmarks/vessels_toolkit.py``):
at 30 views the hysteresis + local rule *alone* fragments the tree on streaks (Dice 0.72, 7
components), a global Otsu level gives Dice 0.955 / clDice 0.957, and this union 0.963 / 0.983
with one component; on a noisy partial-volume phantom it keeps 83 % of a 0.7-voxel-radius branch
where Otsu keeps 67 %.

Multiplying the volume by any positive constant or adding an offset gives the same mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import BadInput
from ..geometry import VolumeGrid

METHODS = ("auto", "otsu", "level", "mask")
_STRUCT26 = np.ones((3, 3, 3), dtype=bool)


def max_opacification(volume: np.ndarray) -> np.ndarray:
    """A 3D volume as is; a 4D ``[t, z, y, x]`` series → its maximum over time (vessel map)."""
    v = np.asarray(volume)
    if v.ndim == 4:
        return v.max(axis=0)
    if v.ndim != 3:
        raise BadInput(f"expected a 3D volume [z, y, x] or a 4D series [t, z, y, x], got shape {v.shape}")
    return v


def is_binary(volume: np.ndarray) -> bool:
    """True for masks: boolean arrays or arrays with at most two distinct values (one of them 0)."""
    v = np.asarray(volume)
    if v.dtype == bool:
        return True
    if v.size == 0:
        return False
    lo, hi = v.min(), v.max()
    if lo != 0:
        return False
    return bool(np.all((v == lo) | (v == hi)))


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected component labels (the connectivity used for every count in this package)."""
    return ndimage.label(np.asarray(mask, dtype=bool), structure=_STRUCT26)


def remove_small_components(mask: np.ndarray, *, min_fraction: float = 0.01, min_voxels: int = 27,
                            min_extent_voxels: int | None = 10,
                            min_inscribed_radius_voxels: float = 2.0) -> tuple[np.ndarray, dict[str, int]]:
    """Keep 26-connected components of ≥ ``min_voxels`` that are either large (≥ ``min_fraction`` ×
    the largest) or a vessel piece: ≥ ``min_extent_voxels`` long (bounding box; ``None`` disables)
    and thick somewhere — a ball of radius ``min_inscribed_radius_voxels`` fits inside (distance
    transform), i.e. a tube at least ~3 voxels across.

    Relative to the main tree, so a small field of view and a whole-head volume behave alike; the
    absolute floor only removes specks smaller than a 3×3×3 block. The vessel-piece rule keeps an
    artery that crosses the volume without joining the main tree (a separate late-filling vessel,
    aortic dsa_quality run: inscribed radius 2–2.2 voxels, also when it falls apart into pieces of
    100–400 voxels) while the streak islands of sparse-view FDK/SART go: they are sheets and lines
    one or two voxels thin (inscribed radius 1 in all 90 islands of the RTK FDK/SART peers on both
    benchmark runs), however long or wide (a mean cross-section rule could not tell a fanned streak,
    section 3–9 voxels, from a 5 mm vessel fragment, section 8–10).
    """
    labels, n = label_components(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool), {"components_before": 0, "components": 0}
    sizes = np.bincount(labels.ravel())[1:]
    keep = sizes >= min_fraction * sizes.max()
    if min_extent_voxels is not None:
        for k, box in enumerate(ndimage.find_objects(labels)):
            if keep[k] or sizes[k] < min_voxels or max(s.stop - s.start for s in box) < min_extent_voxels:
                continue
            piece = np.pad(labels[box] == k + 1, 1)
            keep[k] = ndimage.distance_transform_edt(piece).max() >= min_inscribed_radius_voxels
    keep &= sizes >= min_voxels
    if not keep.any():
        keep[np.argmax(sizes)] = True
    lut = np.concatenate([[False], keep])
    return lut[labels], {"components_before": int(n), "components": int(keep.sum())}


def robust_background(values: np.ndarray) -> tuple[float, float]:
    """(background level, noise σ) from the median and the MAD of a large voxel sample."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size > 2_000_000:  # a strided sample is enough for two order statistics
        v = v[:: v.size // 2_000_000]
    bg = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - bg)))
    return bg, sigma


def segment_vessels(volume: np.ndarray, grid: VolumeGrid | None = None, *, method: str = "auto",
                    level: float | None = None, noise_k: float = 3.0, low_ratio: float = 0.5,
                    local_fraction: float = 0.5, thin_fraction: float = 0.5,
                    local_radius_vox: int = 3, min_component_fraction: float = 0.01,
                    min_component_voxels: int = 27) -> tuple[np.ndarray, dict[str, Any]]:
    """Binary vessel mask ``[z, y, x]`` of a (max-opacification) volume, plus what was done.

    ``method``: ``"auto"`` (noise level → Otsu ∪ (hysteresis ∩ local half maximum) → islands),
    ``"otsu"`` (one global Otsu level on the above-noise voxels, then islands),
    ``"level"`` (a user-given ``level``, e.g. the anchors' 0.008 for their protocol; reported),
    ``"mask"`` (input already binary). Binary inputs are always taken as masks.
    ``info`` holds the levels used (in the volume's own units), the noise estimate, component
    counts and the segmented volume in mm³ (if ``grid`` is given).
    """
    if method not in METHODS:
        raise BadInput(f"unknown segmentation method {method!r}; use one of {', '.join(METHODS)}")
    vol = max_opacification(volume)
    if grid is not None and tuple(vol.shape) != tuple(grid.shape):
        raise BadInput(f"volume shape {vol.shape} does not match its grid {grid.shape}")
    if not np.isfinite(vol).all():
        raise BadInput("volume contains NaN or infinite values; cannot segment")
    info: dict[str, Any] = {"method": method}
    if method == "mask" or is_binary(vol):
        info["method"] = "mask"
        mask = np.asarray(vol) != 0
        _, n = label_components(mask)
        info.update(components_before=int(n), components=int(n))
        return _finish(mask, grid, info)
    v = np.asarray(vol, dtype=np.float32)
    if method == "level":
        if level is None:
            raise BadInput("segmentation method 'level' needs a level")
        info["threshold"] = float(level)
        mask, comp = remove_small_components(v >= level, min_fraction=min_component_fraction,
                                             min_voxels=min_component_voxels)
        info.update(comp)
        return _finish(mask, grid, info)

    from skimage.filters import threshold_otsu

    bg, sigma = robust_background(v)
    vmax = float(v.max())
    if vmax <= bg:
        raise BadInput("volume has no voxel above its background level; nothing to segment")
    # a noise-free synthetic volume has MAD 0: fall back to a tiny fraction of the dynamic range
    sigma_eff = max(sigma, 1e-3 * (vmax - bg))
    low = bg + noise_k * sigma_eff
    cand = v[v > low]
    if cand.size < min_component_voxels:
        raise BadInput(f"only {cand.size} voxels stand out of the noise (> {low:.4g}); nothing to segment")
    cand = cand.astype(np.float64)   # float32 cannot hold 256 distinct bins of a very narrow range
    high = float(threshold_otsu(cand)) if np.ptp(cand) > 0 else float(cand[0])
    info.update(background=bg, noise_sigma=sigma, threshold_low=float(low), threshold_high=high,
                candidate_fraction=float(cand.size / v.size))
    if method == "otsu":
        mask = v >= high
    else:
        seeds = v >= high
        low = max(low, low_ratio * (high - bg) + bg)
        info["threshold_low"] = float(low)
        # face connectivity here: 26-connected low-level regions leak along streaks
        strong, _ = ndimage.label(v > low)
        seeded = np.unique(strong[seeds])
        seeded = seeded[seeded > 0]
        lut = np.zeros(int(strong.max()) + 1, dtype=bool)
        lut[seeded] = True
        hyst = lut[strong]
        size = 2 * int(local_radius_vox) + 1
        local_max = ndimage.maximum_filter(v, size=size)
        thin = v - ndimage.grey_opening(v, size=(size,) * 3) >= thin_fraction * (v - bg)
        mask = seeds | (hyst & thin & (v - bg >= local_fraction * (local_max - bg)))
        info.update(local_fraction=local_fraction, thin_fraction=thin_fraction, local_window_voxels=size)
    mask, comp = remove_small_components(mask, min_fraction=min_component_fraction,
                                         min_voxels=min_component_voxels)
    info.update(comp)
    return _finish(mask, grid, info)


def _finish(mask: np.ndarray, grid: VolumeGrid | None, info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    mask = np.asarray(mask, dtype=bool)
    info["voxels"] = int(mask.sum())
    if grid is not None:
        info["volume_mm3"] = float(info["voxels"] * abs(np.linalg.det(grid.affine[:3, :3])))
    return mask, info
