"""Small simulated two-view cases shared by the coronary tests (a helper module, not a conftest:
a second ``conftest`` module name would shadow ``Testing/conftest.py`` for other suites)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from angiorecon.coronary.hull import roi_grid
from angiorecon.coronary.problem import CoronaryProblem
from angiorecon.metrics.evaluate import resample_to_grid
from angiorecon.simulation.products import CoronaryConfig, CoronaryViews, simulate_coronary, write_coronary


def small_config(side: str = "right") -> CoronaryConfig:
    """256² views at ~0.57 mm pixels, a few seconds to simulate. Most of the tree is in both fields of
    view, not all: distal tips can leave a detector (0–4.6 % of the true centerline on seeds 0–2 of
    either side; right seed 0, the pose tests' case, 2.2 %, which their truth-coverage test allows for)."""
    return CoronaryConfig(side=side, detector=(256, 256), pixel_spacing=(0.55, 0.6), vessel_spacing=0.4)


@dataclass
class SmallCase:
    views: CoronaryViews
    problem: CoronaryProblem

    def truth(self) -> np.ndarray:
        """The true lumen on the problem's grid (occupancy ≥ ½)."""
        return resample_to_grid(self.views.vessels.occupancy, self.views.vessels.grid, self.problem.grid) >= 0.5


def small_case(side: str = "right", seed: int = 0, voxel: float = 0.6,
               config: CoronaryConfig | None = None) -> SmallCase:
    views = simulate_coronary(config=config or small_config(side), seed=seed)
    masks = views.masks_2d.astype(np.float32)
    grid = roi_grid(views.geometry, masks, spacing=voxel)
    return SmallCase(views, CoronaryProblem(views.geometry, masks, grid, views.images))


def write_case(views: CoronaryViews, root: Path) -> Path:
    """``write_coronary`` into ``root`` (the product layout of ``simulate two-view``); returns ``root``."""
    def path(rel: str) -> Path:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    write_coronary(views, path)
    return root
