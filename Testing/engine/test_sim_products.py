"""Simulated products: training pairs, rotational DSA runs (dataset + DICOM + truth) and coronary views."""

from __future__ import annotations

import json

import numpy as np
import pytest

from angiorecon.data import load_sample_ct
from angiorecon.simulation import physics
from angiorecon.simulation.pairs import PairGenerator
from angiorecon.simulation.products import (CoronaryConfig, RotationalConfig, simulate_coronary,
                                            simulate_rotational)

from conftest import json_events, run_engine


@pytest.fixture(scope="module")
def sample():
    return load_sample_ct("aorta_cta")


def test_sample_data_ships_with_the_package(sample):
    hu, grid, masks = sample
    assert hu.shape == grid.shape == (164, 126, 120)
    np.testing.assert_allclose(grid.spacing, 1.5)
    assert masks["aorta"].sum() > 50000
    assert hu[masks["aorta"]].mean() > 250          # arterial-phase CTA: iodine in the aorta
    assert np.percentile(hu, 1) < -900              # HU, air present


def test_pair_generator_api(sample):
    hu, grid, masks = sample
    gen = PairGenerator(hu, grid, vessel_mask=masks["aorta"], detector=(64, 48), seed=4)
    s = gen.sample()
    assert set(s) >= {"fill", "mask", "dsa", "vessel_2d", "meta"}
    for k in ("fill", "mask", "dsa"):
        assert s[k].shape == (64, 48) and s[k].dtype == np.float32 and np.all(np.isfinite(s[k]))
    assert s["vessel_2d"].dtype == bool
    assert np.all(s["dsa"] >= 0) and s["dsa"].max() > 0.005
    assert np.all(s["dsa"][s["vessel_2d"]] > 0)
    # fill − mask is the iodine signal plus fresh noise: it correlates with the ideal target
    diff = s["fill"] - s["mask"]
    if s["vessel_2d"].sum() > 20:
        assert diff[s["vessel_2d"]].mean() > 0.5 * s["dsa"][s["vessel_2d"]].mean()
    b = gen.batch(3)
    assert b["fill"].shape == (3, 64, 48) and len(b["meta"]) == 3
    # deterministic for a seed, and noise is fresh for every sample
    again = PairGenerator(hu, grid, vessel_mask=masks["aorta"], detector=(64, 48), seed=4).sample()
    np.testing.assert_array_equal(again["fill"], s["fill"])
    assert not np.array_equal(b["fill"][0], s["fill"])


def test_rotational_run_recovers_iodine_and_fills_over_time(sample):
    hu, grid, masks = sample
    cfg = RotationalConfig(frames=16, detector=(48, 48), i0=1e7, blur_sigma_px=0.0, truth_times=2)
    run = simulate_rotational(hu, grid, masks, vessel_source="real", config=cfg, seed=2)
    assert run.dsa.shape == run.mask_run.shape == (16, 48, 48)
    # the geometry's isocentre is the centre of the (centred) CT grid
    np.testing.assert_allclose(run.grid.center, 0.0, atol=1e-9)
    np.testing.assert_allclose(np.rad2deg(np.ptp(run.geometry.meta["angles_rad"])), 200.0)
    # subtraction recovers the noise-free iodine line integrals to the noise level
    sigma = np.sqrt(2.0 / (cfg.i0 * np.exp(-(-np.log(run.mask_run / cfg.i0)))))
    err = (run.dsa - run.iodine)[run.iodine > 0.02]
    assert np.abs(err).mean() < 4 * sigma[run.iodine > 0.02].mean()
    # the bolus fills the vessels during the rotation: little iodine early, a lot later
    per_frame = run.iodine.reshape(16, -1).sum(axis=1)
    assert per_frame[0] < 0.05 * per_frame.max()
    assert np.argmax(per_frame) > 2
    # time-to-peak ground truth lies after the arrival time in every vessel voxel
    ttp, arr = run.contrast.time_to_peak_map(), run.contrast.arrival_map()
    v = np.isfinite(ttp)
    assert v.sum() > 1000 and np.all(ttp[v] > arr[v])
    # the contrast of the CT's own enhanced lumen was removed from the mask run
    assert run.info["vessel_source"] == "real"


def test_patient_motion_leaves_residuals():
    hu, grid, masks = load_sample_ct("aorta_cta")
    kw = dict(frames=6, detector=(40, 40), i0=1e9, blur_sigma_px=0.0, truth_times=1)
    still = simulate_rotational(hu, grid, masks, config=RotationalConfig(**kw), seed=1)
    moved = simulate_rotational(hu, grid, masks, config=RotationalConfig(**kw, motion_deg=1.0, motion_mm=2.0),
                                seed=1)
    r_still = np.abs(still.dsa - still.iodine).mean()
    r_moved = np.abs(moved.dsa - moved.iodine).mean()
    assert r_moved > 5 * r_still
    # same seed → same data
    again = simulate_rotational(hu, grid, masks, config=RotationalConfig(**kw), seed=1)
    np.testing.assert_array_equal(again.dsa, still.dsa)


def test_coronary_views_geometry_and_masks():
    cfg = CoronaryConfig(views=2, detector=(96, 96), pixel_spacing=(1.0, 1.2), vessel_spacing=0.5, stenoses=1)
    v = simulate_coronary(config=cfg, seed=5)
    (les,) = v.info["lesions"]
    k = les["node"]
    np.testing.assert_allclose(v.tree.nodes[k], les["position"], atol=1e-9)   # truth in the product's frame
    sep = v.info["separation_deg"][0][1]
    assert 30.0 <= sep <= 90.0
    assert v.masks_2d.shape == (2, 96, 96) and v.masks_2d.any(axis=(1, 2)).all()
    # 2D masks lie where the iodine is and the projected centerline points fall inside them
    assert np.all(v.iodine[v.masks_2d] > 0)
    uv = v.geometry.project_points(v.tree.nodes[v.tree.radii > 1.2])
    for k in range(2):
        c = np.round(uv[k]).astype(int)
        ok = (c[:, 0] >= 0) & (c[:, 0] < 96) & (c[:, 1] >= 0) & (c[:, 1] < 96)
        assert v.masks_2d[k][c[ok, 1], c[ok, 0]].mean() > 0.9
    # physical contrast: the typical vessel signal is (μ/ρ)·c·(chord ≤ diameter); overlaps and
    # foreshortened segments may exceed it, but not the median over the vessel pixels
    full = physics.iodine_mu_per_mg_ml(65) * cfg.c_peak
    med = np.median(v.iodine[v.masks_2d])
    assert 0.3 * full <= med <= full * 2 * v.tree.radii.max()



def test_coronary_heart_motion_moves_vessels_not_nominal_geometry():
    base = dict(views=2, detector=(64, 64), pixel_spacing=(1.0, 1.0), vessel_spacing=0.6)
    still = simulate_coronary(config=CoronaryConfig(**base), seed=9)
    moved = simulate_coronary(config=CoronaryConfig(**base, motion_mm=6.0), seed=9)
    np.testing.assert_allclose(moved.geometry.source, still.geometry.source)      # nominal geometry kept
    assert not np.array_equal(moved.masks_2d, still.masks_2d)                      # vessels shifted in the images
    assert len(moved.info["heart_motion_per_view"]) == 2


def test_coronary_dicom_views_read_back(tmp_path):
    from angiorecon.formats.dicom_xa import read_xa
    from angiorecon.simulation.products import write_coronary

    cfg = CoronaryConfig(views=2, detector=(64, 64), pixel_spacing=(1.0, 1.0), vessel_spacing=0.6)
    v = simulate_coronary(config=cfg, seed=8)

    def out(rel):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    roles = {r for r, _, _ in write_coronary(v, out)}
    assert {"dicom", "vessel_mask", "mesh", "centerlines", "truth", "preview"} <= roles
    pts = v.tree.nodes[::25]
    for k in range(2):
        xa = read_xa(tmp_path / "dicom" / f"view_{k + 1}.dcm")
        assert xa.n_frames == 1
        np.testing.assert_allclose(xa.primary_deg[0], v.geometry.meta["primary_deg"][k], atol=1e-3)
        np.testing.assert_allclose(xa.geometry.project_points(pts)[0], v.geometry.project_points(pts)[k], atol=1e-2)
        np.testing.assert_allclose(xa.frames[0], v.counts[k], rtol=1e-3, atol=0.5)


def test_simulate_cli_rotational_writes_dataset_and_truth(tmp_path):
    out = tmp_path / "rot"
    r = run_engine("simulate", "rotational", "--sample", "aorta_cta", "--frames", "8", "--detector", "32",
                   "--seed", "7", "--out", out, "--events", "json")
    assert r.returncode == 0, r.stderr
    ev = json_events(r.stdout)
    assert any(e["event"] == "progress" for e in ev) and ev[-1]["event"] == "result"
    man = json.loads((out / "manifest.json").read_text())
    roles = {o["role"] for o in man["outputs"]}
    assert {"projections", "dataset", "vessel_mask", "mesh", "centerlines", "time_to_peak", "sequence",
            "dicom", "preview"} <= roles
    tj = json.loads((out / "dataset" / "transforms.json").read_text())
    assert tj["N_views"] == 8 and tj["proj_resolution"] == [32, 32] and tj["volume_resolution"] == [120, 126, 164]
    from angiorecon.formats.dataset import read_dataset

    ds = read_dataset(out / "dataset")
    np.testing.assert_allclose(ds.line_integrals(), ds.projections, atol=1e-5)
    np.testing.assert_allclose(ds.geometry.times, 4.4 * np.arange(8) / 8)
    # DICOM XA read-back describes the same rays (columns mirrored w.r.t. the VPAL convention)
    from angiorecon.formats.dicom_xa import read_xa
    from angiorecon.formats.volume import read_stack
    from angiorecon.geometry import ConeBeamGeometry

    xa = read_xa(out / "dicom" / "mask.dcm")
    geom = ConeBeamGeometry.load_json(out / "dataset" / "geometry.json")
    np.testing.assert_allclose(ds.geometry.source, geom.source, atol=1e-6)
    pts = np.array([[10.0, -20.0, 30.0], [-40.0, 5.0, -10.0]])
    a, b = geom.project_points(pts), xa.geometry.project_points(pts)
    np.testing.assert_allclose(b[..., 0], 31 - a[..., 0], atol=1e-3)
    np.testing.assert_allclose(b[..., 1], a[..., 1], atol=1e-3)
    mask_run = read_stack(out / "dataset" / "mask_run.nii.gz")
    np.testing.assert_allclose(xa.frames[:, :, ::-1], mask_run, rtol=1e-3, atol=1.0)
    # the DICOM folder is one study whose mask/fill pair gives the dataset's DSA signal
    from angiorecon.formats.xa_study import load_study, select_dsa

    sig = select_dsa(load_study([out / "dicom"]).runs)
    np.testing.assert_allclose(sig.line_integrals[:, :, ::-1], ds.projections, atol=2e-3)


def test_simulate_cli_rejects_bad_input(tmp_path):
    r = run_engine("simulate", "rotational", "--out", tmp_path / "x", "--events", "json")
    assert r.returncode == 2
    assert "needs a CT" in json_events(r.stdout)[-1]["message"]
    r = run_engine("simulate", "rotational", "--sample", "nope", "--out", tmp_path / "y", "--events", "json")
    assert r.returncode == 2 and "unknown sample" in json_events(r.stdout)[-1]["message"]
