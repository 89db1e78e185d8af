"""Peer checks against itk-rtk: Joseph forward/back-projection and short-scan FDK on the same data."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.operators import back_project, fdk, forward_project
from angiorecon.simulation.phantoms import AnalyticPhantom, Cylinder, Ellipsoid

pytest.importorskip("itk")
rtk_bridge = pytest.importorskip("angiorecon.operators.rtk_bridge")

pytestmark = pytest.mark.rtk

PHANTOM = AnalyticPhantom((Ellipsoid((0, 0, 0), (25, 22, 18), 1.0), Ellipsoid((5, -4, 3), (6, 5, 7), 0.5),
                           Cylinder((-10, 8, -14), (8, 10, 15), 4, 0.6)))
GRID = VolumeGrid.centered((64, 64, 64), 1.0)


@pytest.fixture(scope="module")
def truth():
    return PHANTOM.voxelize(GRID, 2)


def test_joseph_matches_rtk_on_tilted_run(truth):
    """Non-circular DICOM-frame run (primary sweep with cranial tilt) and an anisotropic grid."""
    grid = VolumeGrid.centered((60, 64, 56), (1.05, 1.0, 1.1))
    vol = PHANTOM.voxelize(grid, 1)
    geom = ConeBeamGeometry.from_xa_angles(np.linspace(-60, 80, 5), np.linspace(-15, 20, 5), 1100.0, 750.0,
                                           (1.2, 1.2), (60, 64))
    ours = forward_project(vol, grid, geom)
    peer = rtk_bridge.rtk_forward_project(vol, grid, geom)
    assert np.linalg.norm(ours - peer) / np.linalg.norm(peer) < 0.01
    y = np.random.default_rng(0).random(ours.shape).astype(np.float32)
    bp_ours, bp_peer = back_project(y, grid, geom), rtk_bridge.rtk_back_project(y, grid, geom)
    # RTK treats the outermost voxel layer differently (it clips rays to the box and extrapolates
    # there), so compare one voxel inside the border; that is where the volume lives.
    inner = (slice(1, -1),) * 3
    assert np.linalg.norm((bp_ours - bp_peer)[inner]) / np.linalg.norm(bp_peer[inner]) < 0.01


def test_short_scan_fdk_at_least_as_accurate_as_rtk(truth):
    """200° short scan, 133 views, Parker weights in both; error vs the phantom inside the FOV."""
    geom = ConeBeamGeometry.circular(np.linspace(0, np.deg2rad(200), 133), 750.0, 1200.0, (96, 100), 1.0)
    p = PHANTOM.line_integrals(geom).astype(np.float32)
    core = (slice(8, 56),) * 3
    err = lambda v: float(np.linalg.norm((v - truth)[core]) / np.linalg.norm(truth[core]))  # noqa: E731
    ours = err(fdk(p, GRID, geom))
    peer = err(rtk_bridge.rtk_fdk(p, GRID, geom, short_scan=True))
    # Both implement the same Parker-weighted FDK; they agree to ~1e-4 relative, so allow that much.
    assert ours <= peer * 1.001, (ours, peer)
