"""Mesh / polyline / markups writers: round trips, LPS tags Slicer reads, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from angiorecon.errors import BadInput
from angiorecon.formats.markups import read_markups_curves, write_markups_curves
from angiorecon.formats.mesh import read_mesh, read_polylines, write_mesh, write_polylines

TETRA_V = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=float) + [-3.25, 7.5, 100.125]
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.mark.parametrize("suffix", [".vtp", ".vtk", ".stl", ".obj", ".ply"])
def test_mesh_round_trip(tmp_path, suffix):
    path = write_mesh(tmp_path / f"m{suffix}", TETRA_V, TETRA_F)
    v, f, _ = read_mesh(path)
    # formats may renumber/duplicate vertices (STL): compare the triangles as point sets
    tri_in = np.sort(TETRA_V[TETRA_F].reshape(len(TETRA_F), -1), axis=0)
    tri_out = np.sort(v[f].reshape(len(f), -1), axis=0)
    np.testing.assert_allclose(tri_out, tri_in, atol=1e-4)
    assert not list(tmp_path.glob(".tmp*"))


def test_vtk_files_carry_slicer_lps_tags_and_arrays(tmp_path):
    r = np.arange(4, dtype=float)
    write_mesh(tmp_path / "m.vtk", TETRA_V, TETRA_F, point_arrays={"Radius": r})
    assert b"3D Slicer output. SPACE=LPS" in (tmp_path / "m.vtk").read_bytes()[:100]
    write_mesh(tmp_path / "m.vtp", TETRA_V, TETRA_F, point_arrays={"Radius": r})
    v, f, arrays = read_mesh(tmp_path / "m.vtp")
    np.testing.assert_array_equal(v, TETRA_V)
    np.testing.assert_array_equal(arrays["Radius"], r)
    assert b'Name="SPACE"' in (tmp_path / "m.vtp").read_bytes()


def test_arrays_refused_for_formats_without_them(tmp_path):
    with pytest.raises(BadInput, match="cannot store data arrays"):
        write_mesh(tmp_path / "m.stl", TETRA_V, TETRA_F, point_arrays={"Radius": np.zeros(4)})
    with pytest.raises(BadInput, match="unsupported mesh format"):
        write_mesh(tmp_path / "m.xyz", TETRA_V, TETRA_F)
    with pytest.raises(BadInput, match="does not exist"):
        read_mesh(tmp_path / "missing.vtp")


def test_polylines_round_trip_with_vmtk_arrays(tmp_path):
    lines = [np.random.default_rng(0).normal(size=(5, 3)), np.random.default_rng(1).normal(size=(3, 3))]
    radii = [np.linspace(2, 1, 5), np.array([1.0, 0.9, 0.8])]
    write_polylines(tmp_path / "c.vtp", lines, point_arrays={"Radius": radii},
                    cell_arrays={"CenterlineIds": np.array([0, 1]), "GroupIds": np.array([0, 1]),
                                 "TractIds": np.array([0, 0]), "Blanking": np.array([0, 0])})
    back, parr, carr = read_polylines(tmp_path / "c.vtp")
    assert len(back) == 2
    for a, b, ra, rb in zip(lines, back, radii, parr["Radius"]):
        np.testing.assert_allclose(a, b)
        np.testing.assert_allclose(ra, rb)
    assert set(carr) == {"CenterlineIds", "GroupIds", "TractIds", "Blanking"}
    np.testing.assert_array_equal(carr["CenterlineIds"], [0, 1])


def test_markups_round_trip_and_schema(tmp_path):
    curves = [np.array([[0, 0, 0], [10, 5, 0], [20, 5, 5.0]]), np.array([[1, 2, 3], [4, 5, 6.0]])]
    radii = [np.array([2.0, 1.8, 1.5]), np.array([1.0, 0.5])]
    path = write_markups_curves(tmp_path / "c.mrk.json", curves, radii, names=["a", "b"])
    doc = json.loads(path.read_text())
    m = doc["markups"][0]
    assert m["type"] == "Curve" and m["coordinateSystem"] == "LPS" and m["coordinateUnits"] == "mm"
    rad = [x for x in m["measurements"] if x["name"] == "Radius"][0]
    assert rad["units"] == "mm" and rad["controlPointValues"] == [2.0, 1.8, 1.5]
    back, r, names = read_markups_curves(path)
    assert names == ["a", "b"]
    for a, b in zip(curves, back):
        np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(r[1], radii[1])


def test_markups_carry_further_point_values(tmp_path):
    curves = [np.array([[0, 0, 0], [10, 5, 0], [20, 5, 5.0]]), np.array([[1, 2, 3], [4, 5, 6.0]])]
    radii = [np.array([2.0, 1.8, 1.5]), np.array([1.0, 0.5])]
    angles = [np.array([3.0, 12.5, 40.0]), np.array([90.0, 0.0])]
    path = write_markups_curves(tmp_path / "c.mrk.json", curves, radii, point_values={"EpipolarAngle": ("deg", angles)})
    m = json.loads(path.read_text())["markups"][1]
    meas = {x["name"]: x for x in m["measurements"]}
    assert meas["Radius"]["controlPointValues"] == [1.0, 0.5]
    assert meas["EpipolarAngle"]["units"] == "deg" and meas["EpipolarAngle"]["controlPointValues"] == [90.0, 0.0]
    with pytest.raises(ValueError, match="curve 1: 1 EpipolarAngle values for 2 points"):
        write_markups_curves(tmp_path / "d.mrk.json", curves,
                             point_values={"EpipolarAngle": ("deg", [angles[0], [1.0]])})
    with pytest.raises(ValueError, match="EpipolarAngle has 1 entries for 2 curves"):
        write_markups_curves(tmp_path / "d.mrk.json", curves, point_values={"EpipolarAngle": ("deg", angles[:1])})
    with pytest.raises(ValueError, match="'Radius' given twice"):
        write_markups_curves(tmp_path / "d.mrk.json", curves, radii, point_values={"Radius": ("mm", radii)})
    assert not (tmp_path / "d.mrk.json").exists()


def test_markups_ras_input_is_written_as_lps(tmp_path):
    path = write_markups_curves(tmp_path / "c.mrk.json", [np.array([[1.0, 2.0, 3.0], [4, 5, 6]])],
                                coordinate_system="RAS")
    back, r, _ = read_markups_curves(path)
    np.testing.assert_allclose(back[0], [[-1, -2, 3], [-4, -5, 6]])
    assert r == [None]
    with pytest.raises(ValueError, match="radii"):
        write_markups_curves(tmp_path / "d.mrk.json", [np.zeros((2, 3))], [np.zeros(3)])
