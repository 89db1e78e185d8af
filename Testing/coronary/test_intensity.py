"""The line-integral cue of the ghost pruning: chords, the top-hat estimate and the search's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.coronary.graph import PointTree, ViewMaps, select_branches, tubes_to_occupancy
from angiorecon.coronary.intensity import IntensityTerm, piece_chords, vessel_line_integral
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.operators import forward_project

RADIUS = 1.2


def _geometry() -> ConeBeamGeometry:
    """Two views 90° apart about the patient axis (LAO 0 and 90), 128² at 0.5 mm."""
    return ConeBeamGeometry.from_xa_angles([0.0, 90.0], [0.0, 0.0], sid=1000.0, sod=750.0, det_shape=(128, 128),
                                           pixel_spacing=(0.5, 0.5))


def _vertical(x: float, y: float) -> np.ndarray:
    """A 30 mm vessel along the patient axis at (x, y): depth well fixed by both views."""
    return np.stack([np.full(61, x), np.full(61, y), np.linspace(-15.0, 15.0, 61)], axis=1)


def _tubes(curves: list[np.ndarray], radius: float = RADIUS) -> PointTree:
    pts = np.concatenate(curves)
    parent = np.concatenate([np.r_[-1, np.arange(len(c) - 1)] + sum(len(p) for p in curves[:i])
                             for i, c in enumerate(curves)])
    return PointTree(pts, np.full(len(pts), radius), parent)


def _projected_lumen(curves: list[np.ndarray], g: ConeBeamGeometry) -> np.ndarray:
    """[V, H, W] lumen chord (mm) of the tubes, by voxelising them and forward projecting."""
    grid = VolumeGrid.centered((80, 80, 120), 0.25)
    return forward_project(tubes_to_occupancy(_tubes(curves), grid), grid, g)


def test_piece_chords_match_the_forward_projection_of_the_tube():
    g = _geometry()
    tilted = np.stack([np.linspace(-8, 8, 41), np.linspace(-4, 4, 41), np.linspace(-12, 12, 41)], axis=1)
    ref = _projected_lumen([tilted], g)
    chords = [m.toarray().reshape(g.det_shape) for m in piece_chords([tilted], np.array([RADIUS]), g, step=0.5)]
    for v, c in enumerate(chords):
        inner = ref[v] > 0.5                      # away from the tube's ends and rim
        assert c.sum() == pytest.approx(ref[v].sum(), rel=0.1)
        assert np.corrcoef(c[inner], ref[v][inner])[0, 1] > 0.8
        # the axis: the chord is 2r / sin(angle to the ray), as the voxelised tube gives it
        assert np.percentile(c[inner], 95) == pytest.approx(np.percentile(ref[v][inner], 95), rel=0.15)


def test_the_top_hat_recovers_a_vessel_on_smooth_anatomy():
    g = _geometry()
    lumen = _projected_lumen([_vertical(-6.0, -6.0)], g)
    yy, xx = np.mgrid[0:128, 0:128]
    anatomy = 2.0 + 0.2 * np.sin(xx / 60.0) + 0.3 * yy / 128.0        # a slope, gently curved
    images = anatomy[None] + 0.05 * lumen
    views = ViewMaps.from_masks(lumen > 0.5)
    est = vessel_line_integral(images, views.half_width, views.skeletons)
    err = np.abs(est - 0.05 * lumen)[:, 10:-10, 10:-10]        # the opening bends the slope at the border
    assert err.max() < 0.01                                    # of a 0.12 peak


def test_intensity_keeps_a_vessel_hidden_behind_another_and_drops_its_ghost():
    """Three vessels; the third lies behind the first in view 1 and behind the second in view 2, so
    it adds no mask pixel, and a ghost that pairs the first and the second covers the same pixels as
    the third. Only the image, where the hidden vessel doubles the chord, tells them apart."""
    g = _geometry()
    t1, t2, t3, ghost = _vertical(-6.0, -6.0), _vertical(6.0, 6.0), _vertical(-6.0, 6.0), _vertical(6.0, -6.0)
    lumen = _projected_lumen([t1, t2, t3], g)
    masks = lumen > 0.5
    views = ViewMaps.from_masks(masks)
    images = 1.5 + 0.05 * lumen
    line_integral = vessel_line_integral(images, views.half_width, views.skeletons)
    curves = [ghost, t3, t1, t2]
    kw = dict(component_px=0.0, fill_gap_mm=0.0)                 # separate straight vessels: no tree to keep
    masks_only, _ = select_branches(curves, g, views, **kw)
    with_image, info = select_branches(curves, g, views, line_integral=line_integral, intensity_weight=1.0, **kw)
    assert sorted(masks_only) in ([0, 1], [2, 3])                 # two pieces explain every mask pixel
    assert sorted(with_image) == [1, 2, 3], with_image
    assert all(k > 0 for k in info["intensity_scale"])


def test_squared_residual_equals_the_state_residual():
    """The energy's shortcut (no Gram matrices) gives the residual the search's state holds."""
    from scipy.sparse import random as sparse_random

    rng = np.random.default_rng(0)
    term = IntensityTerm([sparse_random(8, 50, 0.2, format="csr", random_state=v) for v in range(2)],
                         [rng.random(50) for _ in range(2)], [0.7, 1.3])
    sel = rng.random(8) > 0.5
    term.fit_scale(sel)
    assert term.squared_residual(sel) == pytest.approx(sum(float(s.r @ s.r) for s in term.state(sel)))
