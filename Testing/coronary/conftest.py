"""Shared coronary fixtures: one small simulated two-view case (256² detector, 0.6 mm grid)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from angiorecon.coronary.hull import roi_grid
from angiorecon.coronary.problem import CoronaryProblem
from angiorecon.simulation.products import CoronaryConfig, CoronaryViews, simulate_coronary


def small_config(side: str = "right") -> CoronaryConfig:
    """256² views at ~0.57 mm pixels: the whole tree in the field of view, a few seconds to simulate."""
    return CoronaryConfig(side=side, detector=(256, 256), pixel_spacing=(0.55, 0.6), vessel_spacing=0.4)


@dataclass
class SmallCase:
    views: CoronaryViews
    problem: CoronaryProblem


@pytest.fixture(scope="session")
def small_case() -> SmallCase:
    views = simulate_coronary(config=small_config("right"), seed=0)
    masks = views.masks_2d.astype(np.float32)
    grid = roi_grid(views.geometry, masks, spacing=0.6)
    return SmallCase(views, CoronaryProblem(views.geometry, masks, grid))
