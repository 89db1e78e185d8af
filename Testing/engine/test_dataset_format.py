"""VPAL/4DRGS dataset folders: the anchors' convention, exact round trips, raw runs and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from angiorecon.errors import BadInput
from angiorecon.formats import dataset as dataset_module
from angiorecon.formats.dataset import DSADataset, read_dataset, write_dataset
from angiorecon.formats.volume import write_stack
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid


def _anchor_json(n=4, w=6, h=5):
    return {"N_views": n, "sad": 750.0, "sid": 1200.0, "proj_resolution": [w, h], "proj_spacing": [0.6, 0.5],
            "proj_phy": [w * 0.6, h * 0.5], "volume_resolution": [8, 7, 6], "volume_spacing": [0.5, 0.5, 0.6],
            "volume_phy": [4.0, 3.5, 3.6], "custom_key": {"a": 1},
            "frames": [{"file": f"img{i}", "PrimaryAngle": 0.3 * i, "SecondaryAngle": 0.0} for i in range(n)]}


def test_reads_anchor_convention(tmp_path):
    meta = _anchor_json()
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    proj = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    write_stack(tmp_path / "proj.nii.gz", proj, (0.5, 0.6))
    ds = read_dataset(tmp_path)
    g = ds.geometry
    assert g.det_shape == (5, 6) and np.allclose(g.times, np.arange(4) / 4)
    th = 0.3
    assert np.allclose(g.source[1], [750 * np.cos(th), 750 * np.sin(th), 0])
    assert np.allclose(g.det_center[1], [-450 * np.cos(th), -450 * np.sin(th), 0])
    assert np.allclose(g.det_u[1], 0.6 * np.array([-np.sin(th), np.cos(th), 0]))
    assert np.allclose(g.det_v[1], [0, 0, -0.5])
    assert np.allclose(g.pixel00[1], g.det_center[1] - 2.5 * g.det_u[1] - 2.0 * g.det_v[1])
    assert ds.grid.shape == (6, 7, 8)
    assert np.allclose(ds.grid.origin, [-2.0 + 0.25, -1.75 + 0.25, -1.8 + 0.3])
    assert np.array_equal(ds.line_integrals(), proj)
    assert ds.extra["custom_key"] == {"a": 1} and ds.extra["frames"][2] == {"file": "img2", "SecondaryAngle": 0.0}


def test_round_trip_circular_keeps_anchor_keys(tmp_path):
    meta = _anchor_json()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "transforms.json").write_text(json.dumps(meta))
    write_stack(tmp_path / "a" / "proj.nii.gz", np.ones((4, 5, 6), np.float32), (0.5, 0.6))
    ds = read_dataset(tmp_path / "a")
    write_dataset(tmp_path / "b", ds)
    again = json.loads((tmp_path / "b" / "transforms.json").read_text())
    for k in ("N_views", "proj_resolution", "proj_spacing", "volume_resolution", "volume_spacing", "custom_key"):
        assert again[k] == meta[k]
    assert np.isclose(again["sad"], 750) and np.isclose(again["sid"], 1200)
    assert [f["PrimaryAngle"] for f in again["frames"]] == pytest.approx([f["PrimaryAngle"] for f in meta["frames"]])
    assert all("angiorecon_geometry" not in f and "angiorecon_time" not in f for f in again["frames"])
    assert again["frames"][3]["file"] == "img3"
    assert "angiorecon_volume_affine" not in again


def test_round_trip_exact_tilted_geometry_times_and_raw_runs(tmp_path):
    geom = ConeBeamGeometry.from_xa_angles([-30, 0, 25], [10, 12, 14], 1100, 760, (0.4, 0.4), (5, 6),
                                           times=[0.0, 0.5, 2.0])
    grid = VolumeGrid((6, 7, 8), np.diag([0.5, 0.6, 0.7, 1.0]) + np.array([[0, 0, 0, 1.0], [0] * 4, [0] * 4, [0] * 4]))
    rng = np.random.default_rng(1)
    mask = rng.uniform(1, 2, (3, 5, 6)).astype(np.float32)
    fill = (mask * rng.uniform(0.5, 1.1, mask.shape)).astype(np.float32)
    paths = write_dataset(tmp_path, DSADataset(geom, grid, mask_run=mask, fill_run=fill, extra={"note": "x"}))
    assert sorted(p.name for p in paths) == ["fill_run.nii.gz", "mask_run.nii.gz", "transforms.json"]
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert "angiorecon_geometry" in meta["frames"][0] and "angiorecon_volume_affine" in meta
    ds = read_dataset(tmp_path)
    for k in ("source", "det_center", "det_u", "det_v"):
        assert np.allclose(getattr(ds.geometry, k), getattr(geom, k), atol=1e-9)
    assert np.allclose(ds.geometry.times, [0.0, 0.5, 2.0])
    assert np.allclose(ds.grid.affine, grid.affine)
    assert ds.projections is None and ds.extra["note"] == "x"
    expected = np.maximum(np.log(mask.astype(np.float64)) - np.log(fill.astype(np.float64)), 0)
    assert np.allclose(ds.line_integrals(), expected, atol=1e-6) and ds.line_integrals().min() >= 0


def _write(tmp_path, meta, proj=None):
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    if proj is not None:
        write_stack(tmp_path / "proj.nii.gz", proj)


def test_errors_name_the_file_and_key(tmp_path, monkeypatch):
    meta = _anchor_json()
    del meta["sad"]
    _write(tmp_path, meta, np.ones((4, 5, 6), np.float32))
    with pytest.raises(BadInput, match=r"transforms.json lacks the key 'sad'"):
        read_dataset(tmp_path)
    _write(tmp_path, _anchor_json(), np.ones((4, 6, 5), np.float32))
    with pytest.raises(BadInput, match=r"proj.nii.gz has shape \(4, 6, 5\).*\(4, 5, 6\)"):
        read_dataset(tmp_path)
    bad = np.ones((4, 5, 6), np.float32)
    bad[1, 2, 3] = np.nan
    _write(tmp_path, _anchor_json(), bad)
    # ITK's NIfTI reader turns NaN into 0, so feed the NaN stack to the reader directly
    monkeypatch.setattr(dataset_module, "read_stack", lambda path: bad)
    with pytest.raises(BadInput, match=r"proj.nii.gz contains 1 NaN"):
        read_dataset(tmp_path)
    monkeypatch.undo()
    meta = _anchor_json()
    meta["frames"][0]["angiorecon_geometry"] = {"source": [1, 0, 0]}
    _write(tmp_path, meta, np.ones((4, 5, 6), np.float32))
    with pytest.raises(BadInput, match="on 1 of 4 frames"):
        read_dataset(tmp_path)
    with pytest.raises(BadInput, match="transforms.json is missing"):
        read_dataset(tmp_path / "nowhere")


def test_non_positive_raw_values_are_bad_input(tmp_path):
    geom = ConeBeamGeometry.circular([0.0, 1.0], 700, 1000, (3, 4), 1.0)
    grid = VolumeGrid.centered((4, 4, 4), 1.0)
    mask = np.ones((2, 3, 4), np.float32)
    fill = mask.copy()
    fill[0, 0, 0] = 0
    write_dataset(tmp_path, DSADataset(geom, grid, mask_run=mask, fill_run=fill))
    with pytest.raises(BadInput, match=r"fill_run.nii.gz has 1 non-positive"):
        read_dataset(tmp_path).line_integrals()
