"""Rays of a cone-beam geometry, in world and in voxel-index coordinates.

Every projector in this package works in the *index space* of the target grid (``(i, j, k) =
(x, y, z)`` voxel indices, voxel centres at integers): the ray from the source to a pixel centre
is mapped through the inverse grid affine, so rotated or anisotropic grids need no special case,
and lengths are measured back in world millimetres. :func:`index_space_views` is that one
mapping, shared by the numba CPU path and the torch path so both trace identical rays.

:func:`pixel_rays` and :func:`aabb_intersect` serve the neural-field methods that sample random
rays: world origins, unit directions, and the parameter interval (mm) inside the grid's box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import ConeBeamGeometry, VolumeGrid


@dataclass(frozen=True)
class IndexViews:
    """Per-view ray generators in index space (float64) and world space (for lengths).

    Pixel ``(r, c)`` of view ``n`` lies at ``p00[n] + c·u[n] + r·v[n]``; the ray starts at ``src[n]``.
    """

    src: np.ndarray      #: (N, 3) source, index coords
    p00: np.ndarray      #: (N, 3) pixel (0, 0) centre, index coords
    u: np.ndarray        #: (N, 3) column step, index coords
    v: np.ndarray        #: (N, 3) row step, index coords
    src_w: np.ndarray    #: (N, 3) source, world mm
    p00_w: np.ndarray    #: (N, 3) pixel (0, 0) centre, world mm
    u_w: np.ndarray      #: (N, 3) column step, world mm
    v_w: np.ndarray      #: (N, 3) row step, world mm
    shape_xyz: tuple[int, int, int]


def index_space_views(geometry: ConeBeamGeometry, grid: VolumeGrid) -> IndexViews:
    """Map every view's source and detector into the grid's voxel-index frame."""
    inv = np.linalg.inv(grid.affine)
    lin, off = inv[:3, :3], inv[:3, 3]
    p00 = geometry.pixel00
    nz, ny, nx = grid.shape
    return IndexViews(
        src=geometry.source @ lin.T + off, p00=p00 @ lin.T + off,
        u=geometry.det_u @ lin.T, v=geometry.det_v @ lin.T,
        src_w=geometry.source.copy(), p00_w=p00, u_w=geometry.det_u.copy(), v_w=geometry.det_v.copy(),
        shape_xyz=(nx, ny, nz))


def pixel_rays(geometry: ConeBeamGeometry, views, rows, cols, device=None, dtype=None):
    """World rays through pixel centres: ``(origins[B, 3], unit_dirs[B, 3])`` as torch tensors.

    ``views``, ``rows``, ``cols`` are integer tensors (or arrays) of equal length ``B``; origins are
    the source positions, directions point from the source to the pixel centre. Returned on
    ``device`` (default: the device of ``views``) in ``dtype`` (default float32).
    """
    import torch

    views_t = torch.as_tensor(views)
    dev = torch.device(device) if device is not None else views_t.device
    dt = dtype or torch.float32
    views_t = views_t.to(dev).long()
    rows_t = torch.as_tensor(rows).to(dev).to(dt)
    cols_t = torch.as_tensor(cols).to(dev).to(dt)
    src = torch.as_tensor(geometry.source, dtype=torch.float64, device=dev)[views_t]
    p00 = torch.as_tensor(geometry.pixel00, dtype=torch.float64, device=dev)[views_t]
    u = torch.as_tensor(geometry.det_u, dtype=torch.float64, device=dev)[views_t]
    v = torch.as_tensor(geometry.det_v, dtype=torch.float64, device=dev)[views_t]
    pix = p00 + cols_t.double()[:, None] * u + rows_t.double()[:, None] * v
    d = pix - src
    d = d / torch.linalg.norm(d, dim=1, keepdim=True)
    return src.to(dt), d.to(dt)


def aabb_intersect(origins, dirs, grid: VolumeGrid):
    """Parameter interval ``(t_near[B], t_far[B])`` (mm along unit ``dirs``) inside the grid box.

    The box is the grid's voxel extent (centres ± half a voxel), also for rotated grids (the test
    is done in index space, where the affine is undone and ``t`` keeps its world meaning).
    ``t_near`` is clamped at 0 (nothing behind the source); rays that miss have ``t_near >= t_far``.
    """
    import torch

    dev, dt = origins.device, origins.dtype
    inv = torch.as_tensor(np.linalg.inv(grid.affine), dtype=dt, device=dev)
    o = origins @ inv[:3, :3].T + inv[:3, 3]
    d = dirs @ inv[:3, :3].T
    nz, ny, nx = grid.shape
    lo = torch.full((3,), -0.5, dtype=dt, device=dev)
    hi = torch.tensor([nx - 0.5, ny - 0.5, nz - 0.5], dtype=dt, device=dev)
    tiny = torch.finfo(dt).tiny
    safe = torch.where(d.abs() > tiny, d, torch.full_like(d, tiny))
    t1 = (lo - o) / safe
    t2 = (hi - o) / safe
    t_lo = torch.minimum(t1, t2)
    t_hi = torch.maximum(t1, t2)
    # A ray parallel to a slab either lies inside it (no constraint) or misses the box entirely.
    parallel = d.abs() <= tiny
    inside = (o >= lo) & (o <= hi)
    inf = torch.full_like(t_lo, float("inf"))
    t_lo = torch.where(parallel, torch.where(inside, -inf, inf), t_lo)
    t_hi = torch.where(parallel, torch.where(inside, inf, -inf), t_hi)
    t_near = t_lo.max(dim=1).values.clamp_min(0)
    t_far = t_hi.min(dim=1).values
    return t_near, t_far
