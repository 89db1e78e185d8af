"""``angiorecon convert``: DICOM XA study → VPAL/4DRGS dataset folder, same rays, same reconstruction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import json_events, run_engine
from pydicom.uid import generate_uid

from angiorecon.formats.dicom_xa import write_xa, write_xa_geometry
from angiorecon.formats.xa_study import load_study, select_dsa
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.operators.projector_cpu import back_project, forward_project
from angiorecon.pipelines.convert import default_grid, vpal_equivalent


def _dataset_module():
    return pytest.importorskip("angiorecon.formats.dataset", reason="dataset folder format not available yet")


def _phantom_case(n_views: int = 10, h: int = 20, w: int = 24):
    """A VPAL/4DRGS-convention circular run over 200° and line integrals of a small vessel phantom."""
    th = np.deg2rad(np.linspace(-100.0, 100.0, n_views))
    geom = ConeBeamGeometry.circular(th, 750.0, 1150.0, (h, w), (1.2, 1.2), times=np.arange(n_views) / 7.5)
    grid = VolumeGrid.centered((24, 24, 18), 1.0)
    pts = grid.voxel_centers()
    vol = np.zeros(grid.shape)
    vol[(pts[..., 0] - 2) ** 2 + (pts[..., 1] + 3) ** 2 < 16] = 0.05                     # vessel along z
    vol[np.sum((pts - np.array([-5.0, 4.0, 2.0])) ** 2, axis=-1) < 9] = 0.08            # aneurysm-like ball
    li = forward_project(vol, grid, geom)
    return geom, grid, li


def _same_rays(g_a: ConeBeamGeometry, vals_a: np.ndarray, g_b: ConeBeamGeometry, vals_b: np.ndarray,
               atol: float) -> None:
    """Every pixel of A is a pixel of B with the same source, the same centre and the same value."""
    assert g_a.n_views == g_b.n_views and g_a.det_shape == g_b.det_shape
    p_b = g_b.projection_matrices()
    h, w = g_a.det_shape
    for v in range(g_a.n_views):
        np.testing.assert_allclose(g_a.source[v], g_b.source[v], atol=1e-6)
        centres = g_a.pixel_centers(v).reshape(-1, 3)
        q = np.c_[centres, np.ones(len(centres))] @ p_b[v].T
        cr = q[:, :2] / q[:, 2:]
        idx = np.rint(cr).astype(int)
        np.testing.assert_allclose(cr, idx, atol=1e-6)
        cols, rows = idx[:, 0], idx[:, 1]
        assert cols.min() >= 0 and cols.max() < w and rows.min() >= 0 and rows.max() < h
        np.testing.assert_allclose(g_b.pixel_centers(v)[rows, cols], centres, atol=1e-6)
        np.testing.assert_allclose(vals_b[v][rows, cols], vals_a[v].reshape(-1), atol=atol)


def _write_pair(folder: Path, geom: ConeBeamGeometry, li: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    mask = rng.uniform(2800.0, 3200.0, li.shape)
    study = generate_uid()
    write_xa_geometry(folder / "mask.dcm", mask, geom, study_uid=study, series_number=1, series_description="MASK")
    write_xa_geometry(folder / "fill.dcm", mask * np.exp(-li), geom, study_uid=study, series_number=2,
                      series_description="FILL")


@pytest.fixture
def engine_in_process(capsys):
    """``angiorecon.cli.main`` in this process (fast), restoring the signal handlers the worker installs."""
    import signal

    from angiorecon.cli import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def call(*args: object) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield call
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_converted_study_has_the_rays_and_line_integrals_of_its_source(tmp_path, engine_in_process):
    _dataset_module()
    geom, grid, li = _phantom_case()
    study = tmp_path / "study"
    _write_pair(study, geom, li)
    out = tmp_path / "dataset"
    rc, stdout, err = engine_in_process("convert", study, "--out", out, "--events", "json")
    assert rc == 0, err[-3000:]
    events = json_events(stdout)
    assert events[-1]["event"] == "result"
    manifest = json.loads((out / "manifest.json").read_text())
    assert {o["path"] for o in manifest["outputs"]} >= {"transforms.json"}
    assert (out / "transforms.json").exists() and (out / "proj.nii.gz").exists()
    ds = _dataset_module().read_dataset(out)
    # Same rays in the DICOM frame (columns mirrored with respect to the VPAL convention) and the same
    # line integrals up to the uint16 quantisation of the raw runs.
    _same_rays(geom, li, ds.geometry, ds.projections, atol=2e-3)
    assert ds.mask_run is not None and ds.fill_run is not None
    np.testing.assert_allclose(ds.grid.center, 0, atol=1e-9)
    # Reconstructing both gives the same volume: unfiltered back-projection (the B of FDK) on one grid.
    rec_src = back_project(li.astype(np.float32), grid, geom)
    rec_conv = back_project(np.asarray(ds.projections, np.float32), grid, ds.geometry)
    assert np.max(np.abs(rec_conv - rec_src)) <= 1e-3 * np.max(np.abs(rec_src))


def test_converted_study_reconstructs_like_its_source_with_fdk(tmp_path, engine_in_process):
    _dataset_module()
    fdk_mod = pytest.importorskip("angiorecon.operators.fdk", reason="FDK operator not available yet")
    geom, grid, li = _phantom_case()
    _write_pair(tmp_path / "study", geom, li)
    rc, _, err = engine_in_process("convert", tmp_path / "study", "--out", tmp_path / "ds", "--events", "quiet")
    assert rc == 0, err[-3000:]
    ds = _dataset_module().read_dataset(tmp_path / "ds")
    ref = fdk_mod.fdk(li.astype(np.float32), grid, geom)
    conv = fdk_mod.fdk(ds.line_integrals(), grid, ds.geometry)
    assert np.max(np.abs(conv - ref)) <= 2e-3 * np.max(np.abs(ref))
    # The DICOM frames with their own (column-mirrored) DICOM geometry reconstruct the same volume too.
    sig = select_dsa(load_study([tmp_path / "study"]).runs)
    direct = fdk_mod.fdk(sig.line_integrals, grid, sig.geometry)
    assert np.max(np.abs(direct - ref)) <= 2e-3 * np.max(np.abs(ref))


def test_convert_subtracted_run_and_grid_options(tmp_path, engine_in_process):
    _dataset_module()
    geom, _, li = _phantom_case(n_views=4, h=12, w=16)
    write_xa_geometry(tmp_path / "sub.dcm", li, geom, subtracted=True)
    out = tmp_path / "ds"
    rc, _, err = engine_in_process("convert", tmp_path / "sub.dcm", "--out", out, "--volume-size", "20", "16", "12",
                                   "--voxel-size", "0.5", "--events", "quiet")
    assert rc == 0, err[-3000:]
    ds = _dataset_module().read_dataset(out)
    assert ds.grid.shape == (12, 16, 20) and np.allclose(ds.grid.spacing, 0.5)
    assert ds.mask_run is None and ds.fill_run is None
    _same_rays(geom, li, ds.geometry, ds.projections, atol=float(li.max()) / 65535)


def test_convert_tilted_run_keeps_exact_dicom_geometry(tmp_path, engine_in_process):
    _dataset_module()
    n = 4
    geom = ConeBeamGeometry.from_xa_angles(np.linspace(-60, 60, n), np.full(n, 20.0), 1150.0, 750.0, (1.2, 1.2),
                                           (12, 16))
    grid = VolumeGrid.centered((16, 16, 12), 1.0)
    pts = grid.voxel_centers()
    li = forward_project((np.sum(pts ** 2, axis=-1) < 16).astype(np.float64) * 0.05, grid, geom)
    write_xa_geometry(tmp_path / "sub.dcm", li, geom, subtracted=True)
    rc, _, err = engine_in_process("convert", tmp_path / "sub.dcm", "--out", tmp_path / "ds", "--events", "quiet")
    assert rc == 0, err[-3000:]
    ds = _dataset_module().read_dataset(tmp_path / "ds")
    _same_rays(geom, li, ds.geometry, ds.projections, atol=float(li.max()) / 65535)


def test_default_grid_covers_the_demagnified_detector():
    g = ConeBeamGeometry.from_xa_angles([0.0, 90.0], [0.0, 0.0], 1200.0, 800.0, (0.3, 0.3), (600, 400))
    grid = default_grid(g)
    fov_xy, fov_z = 400 * 0.3 * 800 / 1200, 600 * 0.3 * 800 / 1200
    nz, ny, nx = grid.shape
    assert nx * grid.spacing[0] == pytest.approx(fov_xy, abs=grid.spacing[0])
    assert nz * grid.spacing[2] == pytest.approx(fov_z, abs=grid.spacing[2])
    assert max(grid.shape) <= 256 and np.allclose(grid.center, 0)


def test_vpal_equivalent_mirrors_columns_only_for_rotations_about_the_patient_axis():
    g = ConeBeamGeometry.from_xa_angles(np.array([-100.0, -40.0, 0.0, 70.0]), np.zeros(4), 1150.0, 750.0,
                                        (0.4, 0.3), (12, 10), times=np.arange(4) * 0.1)
    circ = vpal_equivalent(g)
    assert circ is not None and circ.meta["orbit"] == "circular"
    np.testing.assert_allclose(circ.meta["angles_rad"], np.deg2rad([-10.0, 50.0, 90.0, 160.0]), atol=1e-12)
    for v in range(4):
        np.testing.assert_allclose(circ.pixel_centers(v)[:, ::-1], g.pixel_centers(v), atol=1e-9)
    np.testing.assert_allclose(circ.times, g.times)
    tilted = ConeBeamGeometry.from_xa_angles([0.0, 10.0], [15.0, 15.0], 1150.0, 750.0, (0.4, 0.3), (12, 10))
    assert vpal_equivalent(tilted) is None


# ------------------------------------------------------------------------------- bad input via the CLI
def _small_run(path: Path, n: int = 3, **kw) -> Path:
    frames = np.random.default_rng(0).uniform(100, 200, (n, 8, 8)).astype(np.float32)
    kw.setdefault("primary_deg", np.arange(n, dtype=float))
    return write_xa(path, frames, secondary_deg=0.0, sid=1100.0, sod=750.0, pixel_spacing=(0.3, 0.3), **kw)


def _fails(call, tmp_path: Path, *args: object, code: int = 2, match: str = "") -> str:
    out = tmp_path / "out"
    rc, stdout, stderr = call("convert", *args, "--out", out, "--events", "json")
    assert rc == code, (rc, stderr[-2000:])
    err = [e for e in json_events(stdout) if e["event"] == "error"]
    assert len(err) == 1 and "\n" not in err[0]["message"] and "Traceback" not in stderr
    assert match in err[0]["message"], err[0]["message"]
    assert not out.exists() and not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())
    return err[0]["message"]


def test_convert_bad_inputs_fail_cleanly(tmp_path, engine_in_process):
    _dataset_module()
    (tmp_path / "empty").mkdir()
    _fails(engine_in_process, tmp_path, tmp_path / "empty", match="is empty")
    pair = tmp_path / "pair"
    study = generate_uid()
    _small_run(pair / "a.dcm", 3, study_uid=study, series_description="MASK")
    _small_run(pair / "b.dcm", 4, study_uid=study, series_description="FILL")
    msg = _fails(engine_in_process, tmp_path, pair, match="different frame counts (4 vs 3)")
    assert msg.index("fill run b.dcm") < msg.index("mask run a.dcm")
    nosid = tmp_path / "nosid.dcm"
    _small_run(nosid, 3)
    ds = pydicom.dcmread(nosid)
    del ds.DistanceSourceToDetector
    ds.save_as(nosid)
    _fails(engine_in_process, tmp_path, nosid, "--subtracted", match="DistanceSourceToDetector (0018,1110) is missing; pass --sid")
    rc, _, err = engine_in_process("convert", nosid, "--subtracted", "--sid", "1150", "--out", tmp_path / "ok",
                                   "--events", "quiet")
    assert rc == 0, err[-2000:]
    from pydicom import examples

    examples.ct.save_as(tmp_path / "ct.dcm")
    _fails(engine_in_process, tmp_path, tmp_path / "ct.dcm", match="CT Image Storage")
    big = tmp_path / "big.dcm"
    _small_run(big, 3)
    ds = pydicom.dcmread(big)
    ds.NumberOfFrames, ds.Rows, ds.Columns = 100000, 4096, 4096
    ds.save_as(big)
    _fails(engine_in_process, tmp_path, big, code=3, match="100000 frames of 4096x4096")


def test_convert_cli_process_reports_bad_input_with_exit_code_2(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_engine("convert", tmp_path / "empty", "--out", tmp_path / "out", "--events", "json")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert json_events(res.stdout)[-1] == {"event": "error", "kind": "bad-input",
                                            "message": f"folder {tmp_path / 'empty'} is empty"}
    assert not (tmp_path / "out").exists()
