"""A tiny deterministic pair source for the deep-DSA tests: smooth random background + drawn tubes.

Not the simulator (the shipped model is trained only on the simulation engine's pairs); it only has to
look like the protocol: ``source(rng) -> (fill line integrals, ideal DSA)`` with DSA ≥ 0 on tubes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def tube_source(size: int = 48, n_tubes: int = 3, noise: float = 0.01):
    yy, xx = np.mgrid[:size, :size].astype(np.float64)

    def source(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        background = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 8) * 20 + 2.0
        dsa = np.zeros((size, size))
        for _ in range(n_tubes):
            angle = rng.uniform(0, np.pi)
            cx, cy = rng.uniform(0.2 * size, 0.8 * size, 2)
            radius = rng.uniform(1.0, 3.0)
            dist = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
            dsa += 0.2 * np.sqrt(np.clip(radius ** 2 - dist ** 2, 0, None))  # chord length × μ
        fill = background + dsa + noise * rng.standard_normal((size, size))
        return fill.astype(np.float32), dsa.astype(np.float32)

    return source
