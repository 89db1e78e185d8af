"""Metric unit tests on analytic shapes (known Dice / CD / HD95), clDice behaviour, ICP, images."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.geometry import VolumeGrid
from angiorecon.metrics import (anchors_protocol, cldice, dice, icp_rigid, n_components, overlap_within,
                                projection_metrics, psnr, sample_surface, ssim, surface_distances,
                                volume_metrics)
from angiorecon.vessels.surface import mask_to_mesh
from vessel_shapes import Tube, voxelise


def uv_sphere(center, r, n=100):
    th, ph = np.meshgrid(np.linspace(0, np.pi, n), np.linspace(0, 2 * np.pi, 2 * n, endpoint=False), indexing="ij")
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3) * r + center
    return v, _grid_faces(n, 2 * n, wrap=True)


def open_cylinder(offset, r, length=40.0, n=256, m=12):
    ph, z = np.meshgrid(np.linspace(0, 2 * np.pi, n, endpoint=False), np.linspace(-length / 2, length / 2, m), indexing="ij")
    v = np.stack([r * np.cos(ph), r * np.sin(ph), z], -1).reshape(-1, 3) + offset
    return v, _grid_faces(n, m, wrap=False, wrap_first=True)


def _grid_faces(a, b, wrap, wrap_first=False):
    """Two triangles per quad of an a×b vertex grid (index i*b + j); optional periodic axes."""
    faces = []
    ia = a if wrap_first else a - 1
    jb = b if wrap else b - 1
    for i in range(ia):
        for j in range(jb):
            p, q = i * b + j, ((i + 1) % a) * b + j
            p2, q2 = i * b + (j + 1) % b, ((i + 1) % a) * b + (j + 1) % b
            faces += [(p, q, q2), (p, q2, p2)]
    return np.array(faces)


def sphere_shift_distances(r, d, n=200_001):
    """Exact distribution of distances from a sphere to the same sphere shifted by d (cos θ uniform)."""
    t = np.linspace(-1, 1, n)
    return np.abs(np.sqrt(r * r + d * d - 2 * r * d * t) - r)


def cylinder_shift_distances(r, d, n=200_001):
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.abs(np.sqrt(r * r + d * d - 2 * r * d * np.cos(phi)) - r)


def ball_dice(r, d):
    inter = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    return inter / (4 / 3 * np.pi * r ** 3)


@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_shifted_spheres_cd_hd95_exact(shift):
    ref = uv_sphere(np.zeros(3), 6.0)
    pred = uv_sphere(np.array([shift, 0, 0]), 6.0)
    m = surface_distances(pred, ref, n_samples=20_000)
    truth = sphere_shift_distances(6.0, shift)
    assert m["mean_pred_to_ref"] == pytest.approx(truth.mean(), rel=0.02)
    assert m["mean_ref_to_pred"] == pytest.approx(truth.mean(), rel=0.02)
    assert m["cd_sum"] == pytest.approx(2 * truth.mean(), rel=0.02)
    assert m["cd_mean"] == pytest.approx(truth.mean(), rel=0.02)
    assert m["hd95"] == pytest.approx(np.percentile(truth, 95), rel=0.02)


def test_coaxial_and_shifted_cylinders():
    a = open_cylinder(np.zeros(3), 3.0)
    b = open_cylinder(np.zeros(3), 4.0)
    m = surface_distances(a, b, n_samples=20_000)
    assert m["mean_pred_to_ref"] == pytest.approx(1.0, rel=0.02)
    assert m["hd95"] == pytest.approx(1.0, rel=0.02)
    c = open_cylinder(np.array([1.5, 0, 0]), 3.0)
    m = surface_distances(c, a, n_samples=20_000)
    truth = cylinder_shift_distances(3.0, 1.5)
    assert m["cd_mean"] == pytest.approx(truth.mean(), rel=0.02)
    assert m["hd95"] == pytest.approx(np.percentile(truth, 95), rel=0.02)


def test_sampling_is_uniform_by_area():
    # one huge and many tiny triangles: samples must follow area, not triangle count
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [20, 0, 0], [20.1, 0, 0], [20, 0.1, 0]], float)
    f = np.array([[0, 1, 2]] + [[3, 4, 5]] * 50)
    pts = sample_surface(v, f, 20_000)
    small_area = 50 * 0.005
    frac_small = (pts[:, 0] >= 19.99).mean()
    assert frac_small == pytest.approx(small_area / (50 + small_area), abs=0.005)


def test_voxelised_shifted_balls_dice_and_surface():
    g = VolumeGrid.centered((40, 36, 36), 0.5)
    c = g.voxel_centers()
    r, d = 6.0, 1.5
    ref = np.linalg.norm(c, axis=-1) <= r
    pred = np.linalg.norm(c - [d, 0, 0], axis=-1) <= r
    assert dice(pred, ref) == pytest.approx(ball_dice(r, d), rel=0.02)
    m = surface_distances(tuple(mask_to_mesh(pred, g)), tuple(mask_to_mesh(ref, g)), n_samples=20_000)
    truth = sphere_shift_distances(r, d)
    # voxelised + smoothed surfaces carry ~0.05-voxel ripples on top of the analytic values
    assert m["cd_mean"] == pytest.approx(truth.mean(), rel=0.05)
    assert m["hd95"] == pytest.approx(np.percentile(truth, 95), rel=0.05)


def test_anchors_protocol_icp_removes_pure_shift_but_strict_metric_keeps_it():
    g = VolumeGrid.centered((48, 40, 40), 0.5)
    tubes = [Tube((-8, 0, -6), (2, 1, 4), 2.5), Tube((2, 1, 4), (9, -3, 6), 1.5), Tube((2, 1, 4), (0, 7, 8), 1.2)]
    ref = voxelise(tubes, g)
    shift = np.array([1.0, -0.5, 0.5])
    moved = [Tube(tuple(np.add(t.p0, shift)), tuple(np.add(t.p1, shift)), t.r0) for t in tubes]
    pred = voxelise(moved, g)
    rmesh, pmesh = mask_to_mesh(ref, g, smooth=False), mask_to_mesh(pred, g, smooth=False)
    a = anchors_protocol(tuple(pmesh), tuple(rmesh))
    s = surface_distances(tuple(pmesh), tuple(rmesh), n_samples=30_000)
    m = np.asarray(a["icp"]["matrix"])
    back = pmesh.vertices @ m[:3, :3].T + m[:3, 3]
    assert np.abs(back - (pmesh.vertices - shift)).mean() < 0.05   # ICP undid the 1.2 mm shift
    assert a["cd"] < 0.1 * s["cd_sum"]
    assert s["cd_sum"] > 0.8


def test_icp_recovers_rigid_motion():
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(3000, 3)) * [10, 4, 2]
    ang = np.radians(6)
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    moved = pts @ rot.T + [1.0, -2.0, 0.5]
    res = icp_rigid(moved, pts, max_iterations=200, n_samples=3000)
    back = moved @ res["matrix"][:3, :3].T + res["matrix"][:3, 3]
    assert np.abs(back - pts).max() < 1e-3


def test_cldice_is_topology_sensitive_not_skeleton_dice():
    g = VolumeGrid.centered((64, 24, 24), 0.5)
    trunk = Tube((-14, 0, -2), (14, 0, -2), 2.0)
    thin = Tube((-14, 0, 2.5), (14, 0, 2.5), 0.5)
    ref = voxelise([trunk, thin], g)
    broken = ref.copy()
    xs = g.voxel_centers()[..., 0]
    for x0 in (-8.0, 0.0, 8.0):  # three short breaks in the thin tube only
        broken &= ~((np.abs(xs - x0) < 0.8) & (g.voxel_centers()[..., 2] > 1.0))
    d, cl = dice(broken, ref), cldice(broken, ref)
    assert cl["tprec"] == pytest.approx(1.0)
    assert 1 - cl["cldice"] > 5 * (1 - d)
    assert n_components(broken) == n_components(ref) + 3
    missing = voxelise([trunk], g)
    d2, cl2 = dice(missing, ref), cldice(missing, ref)
    assert 1 - d2 < 0.1 and 1 - cl2["cldice"] > 0.25
    # a 1-voxel dilation keeps each skeleton inside the other mask: clDice 1, Dice < 1
    from scipy import ndimage

    fat = ndimage.binary_dilation(ref)
    assert cldice(fat, ref)["cldice"] == pytest.approx(1.0) and dice(fat, ref) < 0.9


def test_overlap_within_distance_in_mm():
    g = VolumeGrid.centered((30, 30, 30), (0.5, 0.5, 1.0))
    c = g.voxel_centers()
    ref = np.linalg.norm(c, axis=-1) <= 5
    pred = np.linalg.norm(c - [1.5, 0, 0], axis=-1) <= 5
    assert overlap_within(pred, ref, g, 2.0)["ot"] == pytest.approx(1.0)
    assert overlap_within(pred, ref, g, 1.0)["ot"] < 1.0


def test_psnr_ssim_2d_both_ways_and_3d():
    rng = np.random.default_rng(0)
    ref = rng.random((4, 32, 32))
    same_scaled = 2.0 * ref
    m = projection_metrics(same_scaled, ref)
    assert m["psnr_minmax"] == float("inf") and m["ssim_minmax"] == pytest.approx(1.0)
    assert m["psnr_raw"] < 10 and m["ssim_raw"] < 0.99   # the scale error shows only unnormalised
    noisy = ref + rng.normal(0, 0.01, ref.shape)
    assert psnr(noisy, ref, 1.0) == pytest.approx(40.0, abs=0.3)
    v = volume_metrics(rng.random((16, 16, 16)), rng.random((16, 16, 16)), vessel_mask=np.ones((16, 16, 16), bool))
    assert v["psnr_3d"] < 15 and -0.2 < v["ssim_3d"] < 0.2
    assert ssim(ref[0], ref[0]) == pytest.approx(1.0)
