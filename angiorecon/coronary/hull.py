"""Sparse back-projection: the visual hull of a few 2D vessel masks and the grid it lives on.

A voxel belongs to the hull when every view sees vessel at its projection. With two views the hull
is a superset of the lumen (ghost intersections where vessels cross epipolar lines); methods
downstream prune it. Sampling is bilinear so soft masks (probabilities) give a soft hull.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid


def sample_views(geometry: ConeBeamGeometry, images: np.ndarray, points: np.ndarray,
                 outside: float = 0.0) -> np.ndarray:
    """Bilinear samples of per-view images at the projections of world ``points`` (M, 3) → (views, M)."""
    uv = geometry.project_points(points)                      # (V, M, 2) as (col, row)
    out = np.empty(uv.shape[:2], dtype=np.float32)
    for v in range(geometry.n_views):
        out[v] = ndimage.map_coordinates(images[v].astype(np.float32), [uv[v, :, 1], uv[v, :, 0]],
                                         order=1, mode="constant", cval=outside)
    return out


def visual_hull(geometry: ConeBeamGeometry, masks: np.ndarray, grid: VolumeGrid,
                chunk: int = 1 << 20, block: int = 4, floor: float = 0.01) -> np.ndarray:
    """Soft visual hull on ``grid``: per voxel, the minimum over views of the sampled mask ([z, y, x]).

    Mask values at or below ``floor`` count as background (hull 0): learned segmenters give every
    pixel a tiny probability, which would otherwise make every voxel a candidate and the sparse
    test below useless (13.8 s instead of 2.5 s on a 512² case, loaded 2-core machine).

    Sparse back-projection: blocks of ``block``³ voxels are first tested at their centres against the
    distance transform of each mask (a block whose footprint cannot reach a vessel pixel in some view
    is empty), then only voxels of the surviving blocks are sampled. Exact: same values as sampling
    every voxel (with the floor applied), typically 10–50× fewer samples.
    """
    masks = np.asarray(masks, dtype=np.float32)
    masks = np.where(masks > floor, masks, 0.0).astype(np.float32)
    nz, ny, nx = grid.shape
    out = np.zeros(grid.shape, dtype=np.float32)
    nb = [-(-n // block) for n in (nz, ny, nx)]
    # distance (px) from every pixel to the nearest pixel with a non-zero mask value, per view
    edt = np.stack([ndimage.distance_transform_edt(m <= 0) for m in masks]).astype(np.float32)
    kb, jb, ib = np.meshgrid(*[np.arange(n) for n in nb], indexing="ij")
    bijk = np.stack([ib.ravel(), jb.ravel(), kb.ravel()], axis=1)
    centres = grid.index_to_world(bijk * block + (block - 1) / 2)
    half_diag = 0.5 * np.sqrt(3) * block * float(grid.spacing.max())
    p = geometry.projection_matrices()
    keep = np.ones(len(centres), dtype=bool)
    for v in range(geometry.n_views):
        q = centres @ p[v, :, :3].T + p[v, :, 3]
        w = q[:, 2]
        uv = q[:, :2] / w[:, None]
        reach = half_diag / (np.maximum(w, 1e-6) * float(geometry.pixel_spacing[v].min())) * 1.2 + 1.5
        h, w_ = edt.shape[1:]
        cu, cv = np.clip(np.rint(uv[:, 0]), 0, w_ - 1), np.clip(np.rint(uv[:, 1]), 0, h - 1)
        off = np.hypot(uv[:, 0] - cu, uv[:, 1] - cv)        # centres beyond the detector edge
        d = edt[v][cv.astype(np.int64), cu.astype(np.int64)] + off
        keep &= d <= reach
    offs = np.stack(np.meshgrid(*[np.arange(block)] * 3, indexing="ij"), -1).reshape(-1, 3)[:, ::-1]  # (i, j, k)
    blocks = bijk[keep]
    for s in range(0, len(blocks), max(1, chunk // block ** 3)):
        ijk = (blocks[s:s + chunk // block ** 3, None, :] * block + offs[None]).reshape(-1, 3)
        ijk = ijk[(ijk[:, 0] < nx) & (ijk[:, 1] < ny) & (ijk[:, 2] < nz)]
        vals = sample_views(geometry, masks, grid.index_to_world(ijk)).min(axis=0)
        out[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = vals
    return out


def roi_grid(geometry: ConeBeamGeometry, masks: np.ndarray, spacing: float = 0.5,
             coarse_spacing: float = 2.0, margin: float = 3.0, half_extent: float = 100.0) -> VolumeGrid:
    """Axis-aligned grid around the hull of the masks (mm), found on a coarse grid around the isocentre.

    Raises ``BadInput`` when the masks' back-projections do not intersect (wrong geometry or empty masks).
    """
    binary = np.stack([ndimage.binary_dilation(m > 0.5, iterations=2) for m in masks]).astype(np.float32)
    n = int(np.ceil(2 * half_extent / coarse_spacing))
    coarse = VolumeGrid.centered((n, n, n), coarse_spacing)
    hull = visual_hull(geometry, binary, coarse) > 0.5
    if not hull.any():
        raise BadInput("the vessel masks of the views do not intersect in 3D: check the views' geometry "
                       "(angles, SID, SOD, pixel spacing) and that each mask contains vessels")
    idx = np.argwhere(hull)[:, ::-1]                          # (i, j, k)
    lo = coarse.index_to_world(idx.min(axis=0)[None])[0] - margin - coarse_spacing
    hi = coarse.index_to_world(idx.max(axis=0)[None])[0] + margin + coarse_spacing
    shape = np.ceil((hi - lo) / spacing).astype(int) + 1
    return VolumeGrid.centered(shape, spacing, center=(lo + hi) / 2)
