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
                chunk: int = 1 << 20) -> np.ndarray:
    """Soft visual hull on ``grid``: per voxel, the minimum over views of the sampled mask ([z, y, x])."""
    nz, ny, nx = grid.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    hull = np.empty(ijk.shape[0], dtype=np.float32)
    for s in range(0, ijk.shape[0], chunk):
        pts = grid.index_to_world(ijk[s:s + chunk])
        hull[s:s + chunk] = sample_views(geometry, masks, pts).min(axis=0)
    return hull.reshape(grid.shape)


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
