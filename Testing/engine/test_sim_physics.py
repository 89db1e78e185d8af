"""X-ray physics of the DSA simulator: iodine contrast, Beer–Lambert/Poisson statistics, subtraction."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.operators import forward_project
from angiorecon.simulation import physics
from angiorecon.simulation.trees import VesselTree
from angiorecon.simulation.voxelize import voxelize_tree


def test_attenuation_tables_and_hu():
    assert physics.mass_attenuation("iodine", 60) == pytest.approx(7.614)
    assert physics.mass_attenuation("water", 60) == pytest.approx(0.2059)
    # K edge: iodine jumps by > 5x across 33.17 keV
    assert physics.mass_attenuation("iodine", 33.5) > 5 * physics.mass_attenuation("iodine", 33.0)
    mu = physics.hu_to_mu(np.array([-1000.0, -2000.0, 0.0, 1000.0]), 60)
    assert mu[0] == 0 and mu[1] == 0
    assert mu[2] == pytest.approx(0.02059, rel=1e-5)  # 1/mm
    assert mu[3] == pytest.approx(2 * 0.02059, rel=1e-5)


def test_iodine_contrast_matches_hand_calculation():
    """A 4 mm vessel with 10 mg/ml at 60 keV: Δp = (μ/ρ)·c·d = 7.614 cm²/g · 0.010 g/cm³ · 0.4 cm."""
    hand = 7.614 * 0.010 * 0.4
    assert physics.iodine_mu_per_mg_ml(60) * 10 * 4 == pytest.approx(hand, rel=1e-9)
    # the same number through the voxeliser and the projector (vessel along z, rays along x)
    tree = VesselTree([[0, 0, -15.0], [0, 0, 15.0]], [2.0, 2.0], [-1, 0], [0, 30.0], [0, 0], [-1])
    grid = VolumeGrid.centered((40, 40, 40), 0.2)
    vol = voxelize_tree(tree, grid, supersampling=4)
    conc = 10.0 * vol.occupancy
    geom = ConeBeamGeometry.circular([0.0], dso=2000.0, dsd=2400.0, det_shape=(9, 41), det_spacing=0.12)
    p = physics.iodine_mu_per_mg_ml(60) * forward_project(conc, grid, geom)[0]
    centre = p[4, 20]
    assert centre == pytest.approx(hand, rel=0.02)
    # the projected profile is the chord length of a 2 mm-radius circle
    u = (np.arange(41) - 20) * 0.12 * 2000 / 2400
    chord = 2 * np.sqrt(np.maximum(4.0 - u ** 2, 0))
    inner = np.abs(u) <= 1.5                           # away from the partial-volume edge
    np.testing.assert_allclose(p[4][inner], physics.iodine_mu_per_mg_ml(60) * 10 * chord[inner], rtol=0.03)
    # the profile's area is the iodine mass per unit length: (μ/ρ)·c·π r²
    du = u[1] - u[0]
    assert p[4].sum() * du == pytest.approx(physics.iodine_mu_per_mg_ml(60) * 10 * np.pi * 4.0, rel=0.01)


def test_poisson_variance_follows_delta_method():
    rng = np.random.default_rng(1)
    p, i0 = 2.0, 1e4
    counts = physics.acquire(np.full((300, 300), p), i0, rng)
    est = physics.counts_to_line_integral(counts, i0)
    expected_var = 1.0 / (i0 * np.exp(-p))
    assert est.mean() == pytest.approx(p, abs=4 * np.sqrt(expected_var / est.size) + expected_var)
    assert est.var() == pytest.approx(expected_var, rel=0.05)
    # noise correlation blur lowers the variance (texture, not more noise)
    blurred = physics.counts_to_line_integral(physics.acquire(np.full((300, 300), p), i0, rng,
                                                              correlation_sigma_px=1.0), i0)
    assert blurred.var() < 0.5 * expected_var


def test_subtraction_recovers_iodine_to_noise_level():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:128, 0:128]
    p_mask = 2.0 + 2.0 * np.sin(xx / 17.0) ** 2 + 0.01 * yy
    p_iod = 0.05 * np.exp(-((xx - 64) ** 2) / 50.0)
    i0 = 1e6
    mask = physics.acquire(p_mask, i0, rng)
    fill = physics.acquire(p_mask + p_iod, i0, rng)
    d = physics.dsa(mask, fill)
    # noise-free acquisition: exact recovery
    exact = physics.dsa(physics.acquire(p_mask, i0, None), physics.acquire(p_mask + p_iod, i0, None))
    np.testing.assert_allclose(exact, p_iod, atol=1e-6)
    sigma = np.sqrt(1 / (i0 * np.exp(-p_mask)) + 1 / (i0 * np.exp(-(p_mask + p_iod))))
    err = (d - p_iod)[p_iod > 0.01]                   # where clipping at 0 does not bias
    z = err / sigma[p_iod > 0.01]
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert z.std() == pytest.approx(1.0, rel=0.08)


def test_patient_motion_is_a_camera_motion():
    geom = ConeBeamGeometry.from_xa_angles([20.0], [10.0], 1100.0, 750.0, (0.3, 0.3), (256, 256))
    motion = physics.rigid_matrix((2.0, -1.0, 3.0), (1.5, -2.0, 0.5), center=np.array([5.0, 0, 0]))
    moved = physics.move_patient(geom, motion)
    pts = np.array([[0.0, 0, 0], [30.0, -20.0, 10.0], [-15.0, 5.0, 40.0]])
    pts_moved = pts @ motion[:3, :3].T + motion[:3, 3]
    np.testing.assert_allclose(moved.project_points(pts), geom.project_points(pts_moved), atol=1e-9)


def test_display_transform_round_trip():
    p = np.linspace(0.0, 7.5, 1000)
    pix = physics.display_transform(physics.intensity(p, 1e5), 1e5, "log", bits=12)
    assert pix.dtype == np.uint16 and pix.max() <= 4095
    assert np.all(np.diff(pix.astype(int)) <= 0)            # more attenuation = darker
    back = physics.inverse_display_log(pix, bits=12)
    np.testing.assert_allclose(back, p, atol=8.0 / 4095)


def test_gamma_variate_and_bolus_timing():
    from angiorecon.simulation.contrast import BolusParams, ContrastModel, gamma_variate
    from angiorecon.simulation.voxelize import VesselVolume

    tau = np.linspace(-1, 5, 6001)
    g = gamma_variate(tau, 3.0)
    assert g[tau <= 0].max() == 0 and g.max() == pytest.approx(1.0) and tau[np.argmax(g)] == pytest.approx(1.0)
    # a 1D "vessel" of 100 voxels at 1 mm path-length steps
    grid = VolumeGrid.centered((100, 1, 1), 1.0)
    occ = np.ones(grid.shape, np.float32)
    plen = np.arange(100, dtype=np.float32).reshape(grid.shape)
    br = np.zeros(grid.shape, np.int32)
    br[..., 50:] = 1
    p = BolusParams(t0=0.5, velocity=100.0, rise=1.0, alpha=3.0, c_peak=10.0, dispersion=0.0)
    m = ContrastModel(VesselVolume(occ, plen, br, grid), p)
    np.testing.assert_allclose(m.arrival_map().ravel(), 0.5 + np.arange(100) / 100.0, atol=1e-6)
    np.testing.assert_allclose(m.time_to_peak_map().ravel(), 1.5 + np.arange(100) / 100.0, atol=1e-6)
    # at each voxel's time to peak its concentration is the peak concentration
    ttp = m.time_to_peak_map().ravel()
    for i in (0, 37, 99):
        assert m.concentration(float(ttp[i])).ravel()[i] == pytest.approx(10.0, rel=1e-6)
    # before arrival: nothing; a front moves along the vessel
    assert m.concentration(0.4).max() == 0
    c = m.concentration(1.0).ravel()
    assert c[0] > 0 and c[60] == 0
    # late-filling branches are delayed by 0.8–2 s and dispersion lowers and widens distal peaks
    late = ContrastModel(VesselVolume(occ, plen, br, grid), BolusParams(t0=0.5, velocity=100.0, late_fraction=1.0),
                         rng=0)
    assert np.all(late.arrival_map().ravel() - m.arrival_map().ravel() >= 0.8 - 1e-9)
    disp = ContrastModel(VesselVolume(occ, plen, br, grid), BolusParams(dispersion=0.01))
    peaks = disp.peak_concentration_map().ravel()
    assert peaks[0] > peaks[-1] and np.all(np.diff(peaks) <= 0)


def test_scatter_lowers_dsa_contrast_as_predicted():
    p_mask = np.full((64, 64), 3.0)
    p_iod = np.zeros((64, 64))
    p_iod[30:34, 30:34] = 0.1                          # a small vessel: scatter barely sees it
    f = 0.5
    kw = dict(scatter_fraction=f, scatter_sigma_px=200.0)
    d = physics.dsa(physics.acquire(p_mask, 1e6, None, **kw), physics.acquire(p_mask + p_iod, 1e6, None, **kw))
    predicted = np.log((1 + f) / (np.exp(-0.1) + f))   # uniform scatter S = f·I_mask
    assert d[31, 31] == pytest.approx(predicted, rel=0.01)
    assert d[31, 31] < 0.7 * 0.1
    assert d[5, 5] == pytest.approx(0.0, abs=1e-4)
