"""Coronary view loading: DICOM XA geometry (issue 9 acceptance), image+sidecar inputs, cardiac phase, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from coronary_cases import write_case

from angiorecon.coronary.views import LoadedViews, load_views, png_to_log
from angiorecon.errors import BadInput
from angiorecon.geometry import ConeBeamGeometry
from angiorecon.simulation.products import CoronaryConfig, simulate_coronary


@pytest.fixture(scope="module")
def coronary_case(tmp_path_factory):
    """A simulated two-view case written as DICOM XA with its truth."""
    root = tmp_path_factory.mktemp("coronary")
    cfg = CoronaryConfig(views=2, detector=(256, 256), pixel_spacing=(0.5, 0.55), vessel_spacing=0.5)
    views = simulate_coronary(config=cfg, seed=5)

    write_case(views, root)
    return views, root


def _sidecar(path: Path, **values) -> Path:
    path.write_text(json.dumps(values))
    return path


def test_dicom_geometry_reprojects_true_centerlines(coronary_case):
    """Acceptance: centerline points of the truth reproject within 0.5 px of the simulator's geometry."""
    from angiorecon.formats.markups import read_markups_curves

    views, root = coronary_case
    loaded = load_views([root / "dicom" / "view_1.dcm", root / "dicom" / "view_2.dcm"])
    assert isinstance(loaded, LoadedViews)
    assert loaded.images.shape == (2, 256, 256) and loaded.images.dtype == np.float32
    assert loaded.frames == [0, 0]
    curves, _, _ = read_markups_curves(root / "truth" / "centerlines.mrk.json")
    pts = np.concatenate(curves)
    assert pts.shape[0] > 50
    got, ref = loaded.geometry.project_points(pts), views.geometry.project_points(pts)
    err = np.linalg.norm(got - ref, axis=-1)
    assert err.max(axis=1).tolist() == pytest.approx([0, 0], abs=0.5)
    inside = (ref >= 0).all(-1) & (ref < 256).all(-1)
    assert inside.mean() > 0.9                      # the check covers points actually in the views
    # log domain, vessels bright: −ln(counts) up to a constant, so brighter on the projected lumen
    np.testing.assert_allclose(loaded.images, -np.log(np.maximum(views.counts, 1.0)), atol=2e-3)
    for v in range(2):
        assert loaded.images[v][views.masks_2d[v]].mean() > loaded.images[v][~views.masks_2d[v]].mean()


def test_png_sidecar_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, (40, 60)).astype(np.uint8)
    from skimage import io

    io.imsave(tmp_path / "a.png", pix, check_contrast=False)
    io.imsave(tmp_path / "b.png", pix[::-1], check_contrast=False)
    geo = dict(sid_mm=1100.0, sod_mm=780.0, pixel_spacing_mm=[0.3, 0.32])
    _sidecar(tmp_path / "a.png.json", primary_deg=30.0, secondary_deg=-20.0, **geo)    # <image>.json
    _sidecar(tmp_path / "b.json", primary_deg=-35.0, secondary_deg=25.0, **geo)        # <stem>.json
    loaded = load_views([tmp_path / "a.png", tmp_path / "b.png"])
    ref = ConeBeamGeometry.from_xa_angles([30.0, -35.0], [-20.0, 25.0], 1100.0, 780.0, (0.3, 0.32), (40, 60))
    for name in ("source", "det_center", "det_u", "det_v"):
        np.testing.assert_allclose(getattr(loaded.geometry, name), getattr(ref, name), atol=1e-9)
    expect = np.log(255.0) - np.log(np.maximum(pix.astype(np.float64), 0.5))
    np.testing.assert_allclose(loaded.images[0], expect, rtol=1e-6)
    np.testing.assert_allclose(loaded.images[1], expect[::-1], rtol=1e-6)
    assert loaded.images[0][pix == 0].min() > loaded.images[0][pix == 255].max()   # dark pixels → bright


def test_nifti_stack_frame_pick_and_relationship(tmp_path):
    from angiorecon.formats.volume import write_stack

    stack = np.stack([np.full((20, 30), k + 1.0, np.float32) for k in range(3)])
    write_stack(tmp_path / "run.nii.gz", stack, (0.4, 0.4))
    side = _sidecar(tmp_path / "geo.json", primary_deg=0, secondary_deg=0, sid_mm=1000, sod_mm=750,
                    pixel_spacing_mm=0.4, pixel_relationship="line_integral")
    loaded = load_views([tmp_path / "run.nii.gz"], frames=[2], sidecars=[side])
    assert loaded.frames == [2]
    np.testing.assert_allclose(loaded.images[0], 3.0)
    np.testing.assert_allclose(loaded.geometry.pixel_spacing[0], [0.4, 0.4])
    with pytest.raises(BadInput, match="holds 3 frames"):
        load_views([tmp_path / "run.nii.gz"], sidecars=[side])
    with pytest.raises(BadInput, match="outside 0..2"):
        load_views([tmp_path / "run.nii.gz"], frames=[3], sidecars=[side])


def test_png_to_log_relationships():
    v = np.array([[0, 127, 255]], np.uint8)
    np.testing.assert_allclose(png_to_log(v, "LOG"), [[255, 128, 0]])
    lin = png_to_log(v)
    assert lin[0, 0] > lin[0, 1] > lin[0, 2] == 0.0
    with pytest.raises(BadInput, match="pixel_relationship"):
        png_to_log(v, "GAMMA")


def _run_with_contrast(path: Path, n: int, best: int, **tags) -> None:
    """A 2-view-sized multi-frame XA run: frame ``best`` has the strongest vessel, then ECG tags added."""
    import pydicom

    from angiorecon.formats.dicom_xa import write_xa

    frames = np.full((n, 48, 48), 3000.0, np.float32)
    for k in range(n):
        depth = 0.6 if k == best else 0.2 + 0.02 * k
        frames[k, :, 22:26] *= np.exp(-depth)        # a dark vertical vessel (less intensity)
    write_xa(path, frames, primary_deg=20.0, secondary_deg=10.0, sid=1100.0, sod=780.0,
             pixel_spacing=(0.3, 0.3), frame_time_ms=100.0)
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_match_phase_from_r_wave_pointer_and_trigger_time(tmp_path):
    # 12 frames at 10 frames/s, R waves at frames 2, 10 (1-based) → R-R 0.8 s = 8 frames
    _run_with_contrast(tmp_path / "a.dcm", 12, best=9, RWavePointer=[2, 10])
    # trigger 300 ms after R at frame 0, 75 bpm (0.8 s): R waves at t = 0.5 s (frame 5)
    _run_with_contrast(tmp_path / "b.dcm", 12, best=5, TriggerTime=300, HeartRate=75)
    loaded = load_views([tmp_path / "a.dcm", tmp_path / "b.dcm"], match_phase=True)
    # a: R-wave frames 1 and 9 (0-based); 9 is better filled. b: frame 5 is at the R wave.
    assert loaded.frames == [9, 5]
    assert loaded.meta["phase_source"] == {"0": "RWavePointer", "1": "TriggerTime+HeartRate"}
    assert all(min(p, 1 - p) < 0.07 for p in loaded.meta["cardiac_phase"].values())
    # a fixed frame in the first view sets the phase the second view matches: frame 5 of a is mid-cycle (0.5)
    half = load_views([tmp_path / "a.dcm", tmp_path / "b.dcm"], frames=[5, None], match_phase=True)
    assert half.frames[0] == 5
    assert abs(half.meta["cardiac_phase"]["1"] - 0.5) < 0.07


def test_bad_inputs_name_file_and_tag(tmp_path, coronary_case):
    import pydicom

    _, root = coronary_case
    ds = pydicom.dcmread(root / "dicom" / "view_1.dcm")
    del ds.DistanceSourceToDetector
    ds.save_as(tmp_path / "nosid.dcm")
    with pytest.raises(BadInput, match=r"nosid\.dcm.*DistanceSourceToDetector"):
        load_views([tmp_path / "nosid.dcm"])
    _run_with_contrast(tmp_path / "plain.dcm", 6, best=2)
    with pytest.raises(BadInput, match="holds 6 frames"):
        load_views([tmp_path / "plain.dcm"])
    with pytest.raises(BadInput, match=r"plain\.dcm.*no ECG tags.*RWavePointer"):
        load_views([tmp_path / "plain.dcm"], match_phase=True)
    img = tmp_path / "x.png"
    from skimage import io

    io.imsave(img, np.zeros((8, 8), np.uint8), check_contrast=False)
    with pytest.raises(BadInput, match="no geometry sidecar"):
        load_views([img])
    _sidecar(tmp_path / "x.json", primary_deg=0, secondary_deg=0, sid_mm=1000, pixel_spacing_mm=0.3)
    with pytest.raises(BadInput, match=r"x\.json lacks 'sod_mm'"):
        load_views([img])
    _sidecar(tmp_path / "x.json", primary_deg=0, secondary_deg=0, sid_mm=700, sod_mm=750, pixel_spacing_mm=0.3)
    with pytest.raises(BadInput, match="sod_mm < sid_mm"):
        load_views([img])
    _sidecar(tmp_path / "x.json", primary_deg=0, secondary_deg=0, sid_mm=1000, sod_mm=750, pixel_spacing_mm=0.3)
    with pytest.raises(BadInput, match="views differ in size"):
        load_views([img, root / "dicom" / "view_1.dcm"])
    with pytest.raises(BadInput, match="does not exist"):
        load_views([tmp_path / "missing.dcm"])
    with pytest.raises(BadInput, match="2 frame indices for 1 views"):
        load_views([img], frames=[0, 0])


def test_cardiac_cycles_from_enhanced_trigger_delays(tmp_path):
    """Per-frame Cardiac Synchronization Sequence: delay / R-R gives the phase, a drop starts a new cycle."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from angiorecon.coronary.views import cardiac_cycles

    _run_with_contrast(tmp_path / "e.dcm", 5, best=0)
    ds = pydicom.dcmread(tmp_path / "e.dcm")
    groups = []
    for delay in (400.0, 600.0, 0.0, 200.0, 400.0):
        sync = Dataset()
        sync.NominalCardiacTriggerDelayTime = delay
        sync.RRIntervalTimeNominal = 800.0
        g = Dataset()
        g.CardiacSynchronizationSequence = Sequence([sync])
        groups.append(g)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.save_as(tmp_path / "e.dcm")
    cyc, source = cardiac_cycles(tmp_path / "e.dcm", np.arange(5) * 0.2)
    assert source.startswith("CardiacSynchronizationSequence")
    np.testing.assert_allclose(cyc, [0.5, 0.75, 1.0, 1.25, 1.5])


def test_log_display_and_subtracted_dicom_are_vessels_bright(tmp_path):
    """LOG (vendor display ∝ ln I) and pre-subtracted runs land in the same log domain as raw counts."""
    from angiorecon.formats.dicom_xa import write_xa

    cfg = CoronaryConfig(views=1, detector=(64, 64), pixel_spacing=(1.0, 1.0), vessel_spacing=0.6,
                         dicom_display="log")
    case = simulate_coronary(config=cfg, seed=3)

    write_case(case, tmp_path)
    loaded = load_views([tmp_path / "dicom" / "view_1.dcm"])
    ref = -np.log(np.maximum(case.counts[0], 1.0))
    assert np.corrcoef(loaded.images[0].ravel(), ref.ravel())[0, 1] > 0.99      # affine in −ln(counts)
    write_xa(tmp_path / "dsa.dcm", case.iodine[0], primary_deg=10.0, secondary_deg=5.0, sid=1100.0, sod=780.0,
             pixel_spacing=(1.0, 1.0), subtracted=True)
    dsa = load_views([tmp_path / "dsa.dcm"])
    np.testing.assert_allclose(dsa.images[0], case.iodine[0], atol=float(case.iodine.max()) / 1e4)


def test_vessel_pixels_at_edge_counts_only_vessels_that_leave_the_detector():
    from angiorecon.coronary.views import vessel_pixels_at_edge

    masks = np.zeros((2, 64, 64), dtype=np.float32)
    masks[0, 30:33, 10:50] = 1.0                 # inside the field of view
    masks[1, 30:33, 20:64] = 1.0                 # runs off the right edge
    assert vessel_pixels_at_edge(masks) == [0, 6]
    assert vessel_pixels_at_edge(masks, margin_px=20) == [3 * (10 + 6), 3 * 20]
