"""Core geometry contract: pixel convention, projection matrices, view selection, XA angles."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.errors import BadInput
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid, uniform_view_indices


def test_uniform_indices_match_anchor_list():
    expected = [0, 4, 8, 13, 17, 22, 26, 31, 35, 39, 44, 48, 53, 57, 62, 66, 70, 75, 79, 84, 88, 93,
                97, 101, 106, 110, 115, 119, 124, 128]
    assert uniform_view_indices(133, 30).tolist() == expected


def test_circular_matches_vpal_convention():
    th = 0.3
    g = ConeBeamGeometry.circular([th], dso=750, dsd=1200, det_shape=(4, 6), det_spacing=(0.5, 0.4))
    c, s = np.cos(th), np.sin(th)
    np.testing.assert_allclose(g.source[0], [750 * c, 750 * s, 0])
    np.testing.assert_allclose(g.det_center[0], [-450 * c, -450 * s, 0])
    np.testing.assert_allclose(g.det_u[0], [-0.4 * s, 0.4 * c, 0])
    np.testing.assert_allclose(g.det_v[0], [0, 0, -0.5])
    np.testing.assert_allclose(g.pixel00[0], g.det_center[0] - 2.5 * g.det_u[0] - 1.5 * g.det_v[0])
    np.testing.assert_allclose(g.sid, [1200])


def test_projection_matrix_maps_pixel_centres_to_their_indices():
    g = ConeBeamGeometry.circular(np.linspace(0, 3, 5), 700, 1100, (8, 10), (0.7, 0.6))
    for n in range(g.n_views):
        pc = g.pixel_centers(n)
        # any point on the ray source→pixel projects onto that pixel
        pts = g.source[n] + 0.37 * (pc - g.source[n])
        uv = g.project_points(pts.reshape(-1, 3))[n].reshape(8, 10, 2)
        cols, rows = np.meshgrid(np.arange(10), np.arange(8))
        np.testing.assert_allclose(uv[..., 0], cols, atol=1e-9)
        np.testing.assert_allclose(uv[..., 1], rows, atol=1e-9)


def test_projected_depth_scales_lengths():
    """A length ℓ at the point spans ℓ / (w · spacing) pixels: w = source distance along the normal / SID."""
    g = ConeBeamGeometry.from_xa_angles([30, -20], [10, 25], sid=1100, sod=780, pixel_spacing=(0.25, 0.25),
                                        det_shape=(200, 200))
    pts = np.array([[0.0, 0.0, 0.0], [12.0, -30.0, 7.0]])
    uv, w = g.project_points_with_depth(pts)
    np.testing.assert_array_equal(uv, g.project_points(pts))
    for n in range(2):
        sid = np.linalg.norm(g.det_center[n] - g.source[n])
        axis = (g.det_center[n] - g.source[n]) / sid           # the C-arm's detector faces the source
        np.testing.assert_allclose(w[n], (pts - g.source[n]) @ axis / sid, rtol=1e-12)
        step = np.cross(axis, [0.0, 0.0, 1.0])                 # a 1 mm step parallel to the detector
        step /= np.linalg.norm(step)
        moved = g.project_points(pts + step)[n]
        np.testing.assert_allclose(np.linalg.norm(moved - uv[n], axis=1), 1.0 / (w[n] * 0.25), rtol=1e-9)


def test_xa_ap_and_lao_views():
    g = ConeBeamGeometry.from_xa_angles([0, 90], [0, 0], sid=1200, sod=800, pixel_spacing=(0.3, 0.2),
                                        det_shape=(100, 100))
    # AP: source posterior (+y in LPS), detector anterior; columns to patient's left (+x), rows to feet
    np.testing.assert_allclose(g.source[0], [0, 800, 0], atol=1e-12)
    np.testing.assert_allclose(g.det_center[0], [0, -400, 0], atol=1e-12)
    np.testing.assert_allclose(g.det_u[0], [0.2, 0, 0], atol=1e-12)
    np.testing.assert_allclose(g.det_v[0], [0, 0, -0.3], atol=1e-12)
    # LAO 90: detector on the patient's left
    np.testing.assert_allclose(g.det_center[1], [400, 0, 0], atol=1e-9)


def test_subset_and_json_round_trip(tmp_path):
    g = ConeBeamGeometry.circular(np.linspace(0, 3, 7), 700, 1100, (8, 10), 0.5, times=np.arange(7) / 7)
    s = g.subset([1, 3, 5])
    assert s.meta["view_indices"] == [1, 3, 5]
    np.testing.assert_allclose(s.times, np.array([1, 3, 5]) / 7)
    s.save_json(tmp_path / "g.json")
    r = ConeBeamGeometry.load_json(tmp_path / "g.json")
    np.testing.assert_allclose(r.projection_matrices(), s.projection_matrices())
    assert r.meta["view_indices"] == [1, 3, 5]
    with pytest.raises(BadInput):
        g.subset([9])


def test_centered_grid_voxel_centres():
    grid = VolumeGrid.centered((4, 6, 8), (1.0, 0.5, 2.0))
    assert grid.shape == (8, 6, 4)
    np.testing.assert_allclose(grid.origin, [-1.5, -1.25, -7.0])
    np.testing.assert_allclose(grid.center, [0, 0, 0], atol=1e-12)
