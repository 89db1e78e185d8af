"""SART / OS-SART with positivity, on the matched Joseph pair.

Each sub-iteration updates the volume from one ordered subset ``S`` of views::

    x ← max(0, x + λ · A_Sᵀ[(p_S − A_S x) / A_S 1] / A_Sᵀ 1)

``subsets=1`` is SIRT (all views at once, smooth and stable), ``subsets=N`` is classic per-view
SART, values in between are OS-SART. Subsets interleave the views (``i::subsets``) so every
subset spans the whole arc.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import BadInput, check_memory
from ..geometry import ConeBeamGeometry, VolumeGrid
from .projector_cpu import back_project, forward_project


def sart(projections: np.ndarray, grid: VolumeGrid, geometry: ConeBeamGeometry, *, iterations: int = 10,
         subsets: int = 1, relaxation: float = 1.0, nonneg: bool = True, x0: np.ndarray | None = None,
         progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Iterative reconstruction ``volume[z, y, x]`` (float32) from line integrals ``[N, H, W]``."""
    p = np.asarray(projections, dtype=np.float32)
    n = geometry.n_views
    if p.shape != (n, *geometry.det_shape):
        raise BadInput(f"projections shape {p.shape} does not match the geometry ({n}, {geometry.det_shape})")
    if iterations < 1 or not 1 <= subsets <= n:
        raise BadInput(f"need iterations >= 1 and 1 <= subsets <= {n}, got {iterations}, {subsets}")
    if not 0 < relaxation < 2:
        raise BadInput(f"relaxation must be in (0, 2), got {relaxation}")
    vox = int(np.prod(grid.shape))
    check_memory((subsets + 3) * vox * 4 + 2 * p.nbytes, "SART")
    groups = [np.arange(s, n, subsets) for s in range(subsets)]
    geoms = [geometry.subset(g) for g in groups]
    ones = np.ones(grid.shape, np.float32)
    inv_rows, inv_cols = [], []
    for g, geo in zip(groups, geoms):
        rows = forward_project(ones, grid, geo)
        inv_rows.append(np.where(rows > 1e-6 * rows.max(), 1.0 / np.maximum(rows, 1e-30), 0.0).astype(np.float32))
        cols = back_project(np.ones((g.size, *geometry.det_shape), np.float32), grid, geo)
        inv_cols.append(np.where(cols > 1e-6 * cols.max(), relaxation / np.maximum(cols, 1e-30), 0.0).astype(np.float32))
    x = np.zeros(grid.shape, np.float32) if x0 is None else np.array(x0, dtype=np.float32, copy=True)
    if x.shape != grid.shape:
        raise BadInput(f"initial volume shape {x.shape} does not match the grid {grid.shape}")
    total = iterations * subsets
    for it in range(iterations):
        for s, (g, geo) in enumerate(zip(groups, geoms)):
            resid = (p[g] - forward_project(x, grid, geo)) * inv_rows[s]
            x += back_project(resid, grid, geo) * inv_cols[s]
            if nonneg:
                np.maximum(x, 0, out=x)
            if progress is not None:
                progress((it * subsets + s + 1) / total, f"iteration {it + 1}/{iterations}")
    return x
