"""One evaluator for volumes, masks and meshes (used by ``angiorecon evaluate`` and benchmarks).

Every number is in world mm on the reference grid. Intensity volumes are segmented with the same
adaptive method (:func:`angiorecon.vessels.segmentation.segment_vessels`), and the output says so;
a prediction on another grid is resampled onto the reference grid first (linear for
intensities, nearest for masks).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import BadInput
from ..geometry import VolumeGrid
from ..vessels.centerlines import CenterlineTree, extract_centerlines
from ..vessels.segmentation import is_binary, segment_vessels
from ..vessels.surface import mask_to_mesh, volume_to_mesh
from .centerline import centerline_metrics
from .image import volume_metrics
from .surface import anchors_protocol, surface_distances
from .volume import cldice, dice, n_components, overlap_within

Progress = Callable[[float, str], None]


def same_grid(a: VolumeGrid, b: VolumeGrid, tol: float = 1e-4) -> bool:
    return tuple(a.shape) == tuple(b.shape) and bool(np.allclose(a.affine, b.affine, atol=tol))


def resample_to_grid(volume: np.ndarray, grid: VolumeGrid, target: VolumeGrid, *, order: int = 1) -> np.ndarray:
    """Values of ``volume`` (on ``grid``) at the voxel centres of ``target`` (0 outside)."""
    m = np.linalg.inv(grid.affine) @ target.affine      # target ijk → source ijk
    # map_coordinates works in array order [z, y, x]: permute the ijk (x, y, z) affine
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1
    mz = perm @ m @ perm
    vol = np.asarray(volume)
    src = vol.astype(np.float32) if vol.dtype == bool else vol
    out = ndimage.affine_transform(src, mz[:3, :3], offset=mz[:3, 3], output_shape=target.shape,
                                   order=order, mode="constant", cval=0.0)
    return out.astype(bool) if vol.dtype == bool else out


def _as_mask(vol: np.ndarray, grid: VolumeGrid, kind: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    if kind not in ("auto", "mask", "intensity"):
        raise BadInput(f"{name} kind must be auto, mask or intensity, got {kind!r}")
    if kind == "mask" or (kind == "auto" and is_binary(vol)):
        mask, info = segment_vessels(vol, grid, method="mask")
        info["segmented"] = False
        return mask, info
    mask, info = segment_vessels(vol, grid, method="auto")
    info["segmented"] = True
    return mask, info


def evaluate_volumes(pred: np.ndarray, ref: np.ndarray, grid: VolumeGrid, *, pred_grid: VolumeGrid | None = None,
                     pred_kind: str = "auto", ref_kind: str = "auto", anchor_level: float | None = None,
                     n_samples: int = 100_000, centerlines: bool = True,
                     ref_centerlines: CenterlineTree | None = None, ot_mm: Sequence[float] = (1.0, 2.0),
                     progress: Progress | None = None, artifacts: dict[str, Any] | None = None) -> dict[str, Any]:
    """All volume metrics of a prediction against a reference on ``grid`` (the reference grid).

    ``pred_grid``: the prediction's grid when it differs (it is resampled onto ``grid``).
    ``anchor_level``: iso-level for the anchors' protocol on intensity volumes (e.g. 0.008 for
    4DRGS outputs); without it the anchors' meshes are unsmoothed marching cubes of the masks.
    ``ref_centerlines``: exact reference centerlines (e.g. the simulator's tree) instead of
    centerlines extracted from the reference mask.
    ``artifacts``: a dict that receives what the numbers were computed on — ``pred_mask``,
    ``ref_mask``, ``pred_mesh``, ``ref_mesh`` (:class:`Mesh`, world mm) and ``pred_centerlines``,
    ``ref_centerlines`` — so a caller can write and show them.
    """
    report = progress or (lambda f, s: None)
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != grid.shape:
        raise BadInput(f"reference shape {ref.shape} does not match its grid {grid.shape}")
    out: dict[str, Any] = {"grid": grid.to_dict(), "units": "mm"}
    pred_binary = pred_kind == "mask" or (pred_kind == "auto" and is_binary(pred))
    if pred_grid is not None and not same_grid(pred_grid, grid):
        if pred.shape != pred_grid.shape:
            raise BadInput(f"prediction shape {pred.shape} does not match its grid {pred_grid.shape}")
        pred = resample_to_grid(pred != 0 if pred_binary else pred, pred_grid, grid, order=0 if pred_binary else 1)
        out["resampled"] = "prediction resampled onto the reference grid"
    elif pred.shape != grid.shape:
        raise BadInput(f"prediction shape {pred.shape} differs from the reference {grid.shape}; give its grid")
    report(0.05, "segment")
    pm, pinfo = _as_mask(pred, grid, "mask" if pred_binary else pred_kind, "prediction")
    rm, rinfo = _as_mask(ref, grid, ref_kind, "reference")
    out["segmentation"] = {"pred": pinfo, "ref": rinfo,
                           "note": "intensity volumes segmented adaptively (segment_vessels 'auto'); masks used as given"}
    report(0.15, "overlap")
    out["volume"] = {"dice": dice(pm, rm), **{f"{k}": v for k, v in cldice(pm, rm).items()},
                     "components_pred": n_components(pm), "components_ref": n_components(rm),
                     "voxels_pred": int(pm.sum()), "voxels_ref": int(rm.sum())}
    for d, ot in zip(ot_mm, overlap_within(pm, rm, grid, list(ot_mm))):
        out["volume"][f"ot_{d:g}mm"] = ot["ot"]
    report(0.35, "surfaces")
    pmesh = mask_to_mesh(pm, grid, smooth=True)
    rmesh = mask_to_mesh(rm, grid, smooth=True)
    if artifacts is not None:
        artifacts.update(pred_mask=pm, ref_mask=rm, pred_mesh=pmesh, ref_mesh=rmesh)
    out["surface"] = {"protocol": "area-uniform samples on smoothed mask surfaces, no alignment",
                      **surface_distances(tuple(pmesh), tuple(rmesh), n_samples=n_samples)}
    report(0.55, "anchors protocol")
    if anchor_level is not None and not pred_binary and not is_binary(ref):
        pa, ra = volume_to_mesh(pred, grid, anchor_level), volume_to_mesh(ref, grid, anchor_level)
        source = f"marching cubes at level {anchor_level:g} on the intensity volumes"
    else:
        pa, ra = mask_to_mesh(pm, grid, smooth=False), mask_to_mesh(rm, grid, smooth=False)
        source = "marching cubes of the masks (no smoothing)"
    out["anchors"] = {"protocol": "ICP of prediction onto reference, vertex CD = sum of one-sided means, "
                                  "HD95 = max of one-sided P95", "surface_source": source,
                      **anchors_protocol(tuple(pa), tuple(ra))}
    if centerlines:
        report(0.7, "centerlines")
        pt = extract_centerlines(pm, grid)
        rt = ref_centerlines if ref_centerlines is not None else extract_centerlines(rm, grid)
        if artifacts is not None:
            artifacts.update(pred_centerlines=pt, ref_centerlines=rt)
        out["centerlines"] = {"ref_source": "given" if ref_centerlines is not None else "extracted from reference mask",
                              **centerline_metrics(pt, rt, voxel_mm=float(grid.spacing.min()))}
    if not pred_binary and not is_binary(ref):
        report(0.9, "image")
        import psutil

        vessels = ndimage.binary_dilation(rm, iterations=2)
        region = "whole volume"
        p_img, r_img = pred, ref
        # skimage's 3D SSIM holds ~12 float64 copies: fall back to the vessels' bounding box
        if 12 * 8 * ref.size > 0.5 * psutil.virtual_memory().available and (pm | rm).any():
            nz = np.argwhere(pm | rm)
            box = tuple(slice(max(a - 4, 0), b + 5) for a, b in zip(nz.min(axis=0), nz.max(axis=0)))
            p_img, r_img, vessels = pred[box], ref[box], vessels[box]
            region = "bounding box of both masks + 4 voxels (whole volume would not fit in memory)"
        out["image"] = {**volume_metrics(p_img.astype(np.float64), r_img.astype(np.float64), vessel_mask=vessels),
                        "region": region}
    report(1.0, "done")
    return out


def evaluate_meshes(pred: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray], *,
                    n_samples: int = 100_000) -> dict[str, Any]:
    """Surface metrics between two meshes in world mm: strict (no alignment) and the anchors'."""
    return {"units": "mm",
            "surface": {"protocol": "area-uniform samples, no alignment",
                        **surface_distances(pred, ref, n_samples=n_samples)},
            "anchors": {"protocol": "ICP of prediction onto reference, vertex CD = sum of one-sided means, "
                                    "HD95 = max of one-sided P95", **anchors_protocol(pred, ref)}}
