"""Scene-loading helpers under slicer-core: node types, RAS geometry, arrays, and ``.mrb`` round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

import module_paths  # noqa: F401  (puts the module folders on sys.path)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
pytestmark = pytest.mark.mrml
pytest_plugins = ["slicer_fixtures"]  # mrml_scene, new_mrml_scene

from DSAReconstructionLib import mrml_io  # noqa: E402  (needs slicer)

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotated_affine() -> np.ndarray:
    """IJK→LPS: 30° about z, 20° about x, anisotropic spacing, off-centre origin."""
    a, b = np.deg2rad(30.0), np.deg2rad(20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag([0.5, 0.7, 1.25])
    m[:3, 3] = [-10.0, 20.0, 5.0]
    return m


def _sphere_with_arrays():
    import vtk
    from vtk.util import numpy_support

    src = vtk.vtkSphereSource()
    src.SetCenter(3.0, -4.0, 12.0)
    src.SetRadius(5.0)
    src.SetThetaResolution(12)
    src.SetPhiResolution(8)
    src.Update()
    pd = vtk.vtkPolyData()
    pd.DeepCopy(src.GetOutput())
    pts = numpy_support.vtk_to_numpy(pd.GetPoints().GetData()).astype(float)
    radius = numpy_support.numpy_to_vtk(np.linalg.norm(pts - [3.0, -4.0, 12.0], axis=1) * 0.25 + pts[:, 2] * 1e-3,
                                        deep=True)
    radius.SetName("Radius")
    pd.GetPointData().AddArray(radius)
    ids = numpy_support.numpy_to_vtk(np.arange(pd.GetNumberOfPoints(), dtype=np.int32), deep=True)
    ids.SetName("GroupIds")
    pd.GetPointData().AddArray(ids)
    return pd, pts


def _points(model_node) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(model_node.GetPolyData().GetPoints().GetData()).astype(float)


def _point_array(model_node, name) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(model_node.GetPolyData().GetPointData().GetArray(name))


def _control_points(curve) -> np.ndarray:
    out = []
    for i in range(curve.GetNumberOfControlPoints()):
        p = [0.0, 0.0, 0.0]
        curve.GetNthControlPointPositionWorld(i, p)
        out.append(p)
    return np.array(out)


def _measurement(curve, name="Radius") -> list[float]:
    values = curve.GetMeasurement(name).GetControlPointValues()
    return [values.GetValue(i) for i in range(values.GetNumberOfTuples())]


def test_volume_from_array_has_rotated_ras(mrml_scene):
    m = _rotated_affine()
    data = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    node = mrml_io.add_volume(mrml_scene.scene, data, m, "DSAVolume")
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetDisplayNode() is not None
    np.testing.assert_allclose(mrml_io.ijk_to_ras(node), FLIP @ m, atol=1e-12)
    assert np.array_equal(slicer.util.arrayFromVolume(node), data)
    # voxel (i, j, k) = (1, 2, 3) lands at the LPS point of the affine, flipped to RAS
    ras = mrml_io.ijk_to_ras(node) @ [1, 2, 3, 1]
    np.testing.assert_allclose(ras[:3], (m @ [1, 2, 3, 1])[:3] * [-1, -1, 1])


def test_volume_file_written_by_engine_loads_at_same_place(mrml_scene, tmp_path):
    from angiorecon.formats.volume import write_volume
    from angiorecon.geometry import VolumeGrid

    m = _rotated_affine()
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    path = write_volume(tmp_path / "vessels.nrrd", data, VolumeGrid(data.shape, m))
    node = mrml_io.load_volume(mrml_scene.scene, path)
    assert node.GetName() == "vessels" and node.GetStorageNode() is not None
    np.testing.assert_allclose(mrml_io.ijk_to_ras(node), FLIP @ m, atol=1e-6)
    assert np.array_equal(slicer.util.arrayFromVolume(node), data)


def test_model_from_polydata_flips_points_and_keeps_arrays(mrml_scene):
    pd, pts = _sphere_with_arrays()
    node = mrml_io.add_model(mrml_scene.scene, pd, "VesselMesh", color=(0.9, 0.2, 0.2))
    np.testing.assert_allclose(_points(node), pts * [-1, -1, 1], atol=1e-5)
    from vtk.util import numpy_support
    assert np.array_equal(_point_array(node, "Radius"),
                          numpy_support.vtk_to_numpy(pd.GetPointData().GetArray("Radius")))
    assert np.array_equal(_point_array(node, "GroupIds"), np.arange(len(pts)))
    assert node.GetDisplayNode().GetColor() == pytest.approx((0.9, 0.2, 0.2))


def test_model_file_written_by_engine(mrml_scene, tmp_path):
    from angiorecon.formats.mesh import write_mesh

    verts = np.array([[0, 0, 0], [10, 0, 0], [0, 20, 0], [0, 0, 30]], float) + [5, -7, 2]
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    thickness = np.array([0.5, 1.0, 1.5, 2.0])
    for suffix in (".vtp", ".vtk"):
        path = write_mesh(tmp_path / f"mesh{suffix}", verts, faces, point_arrays={"Thickness": thickness})
        node = mrml_io.load_model(mrml_scene.scene, path)
        np.testing.assert_allclose(_points(node), verts * [-1, -1, 1], atol=1e-5)
        np.testing.assert_allclose(_point_array(node, "Thickness"), thickness)


def test_curve_with_radius(mrml_scene):
    pts = np.array([[0, 0, 0], [10, 5, 0], [20, 5, 5], [30, 0, 10]], float)
    curve = mrml_io.add_curve(mrml_scene.scene, pts, "Centerline (0)", radius=[2.0, 1.8, 1.5, 1.2],
                              attributes={"CellId": 0, "GroupId": 3})
    assert curve.IsA("vtkMRMLMarkupsCurveNode")
    np.testing.assert_allclose(_control_points(curve), pts * [-1, -1, 1])
    assert _measurement(curve) == [2.0, 1.8, 1.5, 1.2]
    assert curve.GetMeasurement("Radius").GetUnits() == "mm"
    assert curve.GetAttribute("GroupId") == "3"
    interpolated = slicer.util.arrayFromMarkupsCurveData(curve, "Radius", world=True)
    assert interpolated.min() == pytest.approx(1.2) and interpolated.max() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="3 radii for 4 points"):
        mrml_io.add_curve(mrml_scene.scene, pts, "bad", radius=[1.0, 1.0, 1.0])


def test_markups_file_written_by_engine(mrml_scene, tmp_path):
    from angiorecon.formats.markups import write_markups_curves

    a = np.array([[0, 0, 0], [0, 0, 10], [0, 0, 20]], float)
    b = np.array([[0, 0, 20], [5, 0, 25]], float)
    path = write_markups_curves(tmp_path / "centerlines.mrk.json", [a, b], [[3.0, 2.5, 2.0], [1.5, 1.0]],
                                names=["Vessel (0)", "Vessel (1)"])
    nodes = mrml_io.load_markups(mrml_scene.scene, path)
    assert [n.GetName() for n in nodes] == ["Vessel (0)", "Vessel (1)"]
    np.testing.assert_allclose(_control_points(nodes[1]), b * [-1, -1, 1])
    assert _measurement(nodes[0]) == [3.0, 2.5, 2.0]


def test_sequence_2d_frames_with_browser(mrml_scene):
    frames = np.random.default_rng(2).integers(0, 4000, size=(5, 12, 16)).astype(np.int16)
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    attrs = [{"XA.PositionerPrimaryAngle": f"{-100 + 2.5 * i:g}"} for i in range(5)]
    seq, browser = mrml_io.add_sequence(mrml_scene.scene, frames, "DSAFrames",
                                        ijk_to_lps=np.diag([0.3, 0.4, 1.0, 1.0]), index_values=times,
                                        frame_attributes=attrs, playback_fps=4)
    assert seq.GetNumberOfDataNodes() == 5 and seq.GetIndexName() == "time" and seq.GetIndexUnit() == "s"
    assert [float(seq.GetNthIndexValue(i)) for i in range(5)] == times
    third = seq.GetNthDataNode(2)
    assert np.array_equal(slicer.util.arrayFromVolume(third)[0], frames[2])
    assert third.GetAttribute("XA.PositionerPrimaryAngle") == "-95"
    np.testing.assert_allclose(mrml_io.ijk_to_ras(third), np.diag([-0.3, -0.4, 1.0, 1.0]))
    assert browser.GetMasterSequenceNode() is seq and browser.GetPlaybackRateFps() == 4
    proxy = browser.GetProxyNode(seq)
    assert proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode")
    assert np.array_equal(slicer.util.arrayFromVolume(proxy)[0], frames[0])


def test_sequence_4d_filling(mrml_scene):
    frames = np.random.default_rng(3).random((3, 4, 5, 6)).astype(np.float32)
    m = _rotated_affine()
    seq, browser = mrml_io.add_sequence(mrml_scene.scene, frames, "Filling", ijk_to_lps=m, index_values=[0, 1.5, 3])
    assert seq.GetNumberOfDataNodes() == 3
    assert np.array_equal(slicer.util.arrayFromVolume(seq.GetNthDataNode(1)), frames[1])
    np.testing.assert_allclose(mrml_io.ijk_to_ras(seq.GetNthDataNode(1)), FLIP @ m, atol=1e-12)
    browser.SetSelectedItemNumber(2)
    assert np.array_equal(slicer.util.arrayFromVolume(browser.GetProxyNode(seq)), frames[2])


def test_table_from_metrics(mrml_scene):
    flat = mrml_io.add_table(mrml_scene.scene, {"dice": 0.91, "hd95_mm": 1.5, "method": "vpal"}, "Metrics")
    assert flat.GetNumberOfRows() == 3 and flat.GetNumberOfColumns() == 2
    assert flat.GetCellText(0, 0) == "dice" and float(flat.GetCellText(1, 1)) == 1.5
    nested = mrml_io.add_table(mrml_scene.scene, {"fdk": {"dice": 0.6, "psnr": 30.0}, "vpal": {"dice": 0.9}},
                               "Comparison")
    t = nested.GetTable()
    assert [t.GetColumnName(i) for i in range(3)] == ["Name", "dice", "psnr"]
    assert t.GetValue(1, 1).ToDouble() == 0.9 and np.isnan(t.GetValue(1, 2).ToDouble())
    report = {"volume": {"dice": 0.8, "cldice": 0.7}, "surface": {"hd95": 1.5, "per_point": list(range(100))},
              "frames": [0, 5], "prediction": "pred.nii.gz"}
    sections = mrml_io.add_table(mrml_scene.scene, report, "Evaluation")
    assert [sections.GetCellText(r, 0) for r in range(sections.GetNumberOfRows())] == [
        "volume.dice", "volume.cldice", "surface.hd95", "frames", "prediction"]
    assert sections.GetCellText(3, 1) == "0, 5" and sections.GetCellText(4, 1) == "pred.nii.gz"


def test_segmentation_from_mask(mrml_scene):
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[2:8, 3:9, 4:10] = 1
    mask[4:6, 5:7, 11:13] = 2
    seg = mrml_io.add_segmentation(mrml_scene.scene, mask, _rotated_affine(), "Vessels",
                                   segment_names=["vessel", "aneurysm"])
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    assert segmentation.GetNthSegment(1).GetName() == "aneurysm"
    surface = seg.GetClosedSurfaceInternalRepresentation(segmentation.GetNthSegmentID(0))
    assert surface is not None and surface.GetNumberOfPoints() > 0
    assert mrml_scene.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_everything_round_trips_through_mrb(mrml_scene, new_mrml_scene, tmp_path):
    sc = mrml_scene.scene
    m = _rotated_affine()
    data = np.random.default_rng(4).random((6, 7, 8)).astype(np.float32)
    mrml_io.add_volume(sc, data, m, "DSAVolume")
    pd, _ = _sphere_with_arrays()
    model = mrml_io.add_model(sc, pd, "VesselMesh")
    points_before, radius_before = _points(model).copy(), _point_array(model, "Radius").copy()
    pts = np.array([[0, 0, 0], [10, 5, 0], [20, 5, 5], [30, 0, 10]], float)
    mrml_io.add_curve(sc, pts, "Centerline", radius=[2.0, 1.8, 1.5, 1.2], attributes={"CellId": 7})
    frames = np.random.default_rng(5).integers(0, 4000, size=(4, 9, 11)).astype(np.int16)
    attrs = [{"XA.PositionerPrimaryAngle": str(10 * i)} for i in range(4)]
    mrml_io.add_sequence(sc, frames, "DSAFrames", index_values=[0, 0.1, 0.2, 0.3], frame_attributes=attrs)
    mrml_io.add_table(sc, {"dice": 0.91}, "Metrics")

    path = tmp_path / "bundle.mrb"
    assert sc.WriteToMRB(str(path))
    reloaded = new_mrml_scene()
    assert reloaded.scene.ReadFromMRB(str(path))
    sc2 = reloaded.scene

    vol = sc2.GetFirstNodeByName("DSAVolume")
    # MRML stores spacing and direction cosines separately: equal to rounding (~1e-14), not bitwise
    np.testing.assert_allclose(mrml_io.ijk_to_ras(vol), FLIP @ m, rtol=0, atol=1e-12)
    assert np.array_equal(slicer.util.arrayFromVolume(vol), data)

    model2 = sc2.GetFirstNodeByName("VesselMesh")
    assert np.array_equal(_points(model2), points_before)
    assert np.array_equal(_point_array(model2, "Radius"), radius_before)
    assert model2.GetPolyData().GetPointData().GetArray("GroupIds") is not None

    curve = sc2.GetFirstNodeByName("Centerline")
    np.testing.assert_allclose(_control_points(curve), pts * [-1, -1, 1], atol=1e-9)
    assert _measurement(curve) == [2.0, 1.8, 1.5, 1.2] and curve.GetAttribute("CellId") == "7"

    seq = sc2.GetFirstNodeByName("DSAFrames")
    assert seq.GetNumberOfDataNodes() == 4
    assert [seq.GetNthIndexValue(i) for i in range(4)] == ["0", "0.1", "0.2", "0.3"]
    assert seq.GetNthDataNode(3).GetAttribute("XA.PositionerPrimaryAngle") == "30"
    assert np.array_equal(slicer.util.arrayFromVolume(seq.GetNthDataNode(1))[0], frames[1])
    browsers = sc2.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    assert browsers.GetNumberOfItems() == 1
    assert browsers.GetItemAsObject(0).GetMasterSequenceNode() is seq

    table = sc2.GetFirstNodeByName("Metrics")
    assert table.GetCellText(0, 0) == "dice" and float(table.GetCellText(0, 1)) == 0.91


def test_load_manifest_by_role(mrml_scene, tmp_path):
    from angiorecon.formats.markups import write_markups_curves
    from angiorecon.formats.mesh import write_mesh
    from angiorecon.formats.volume import write_stack, write_volume
    from angiorecon.geometry import VolumeGrid

    out = tmp_path / "run"
    m = _rotated_affine()
    grid = VolumeGrid((6, 7, 8), m)
    vol = np.random.default_rng(6).random(grid.shape).astype(np.float32)
    write_volume(out / "volume.nii.gz", vol, grid)
    mask = np.zeros(grid.shape, np.uint8)
    mask[1:5, 2:6, 2:7] = 1
    write_volume(out / "vessel_mask.nrrd", mask, grid)
    write_volume(out / "ttp.nrrd", vol * 3, grid)
    write_mesh(out / "mesh.vtp", np.array([[0, 0, 0], [9, 0, 0], [0, 9, 0]], float), np.array([[0, 1, 2]]))
    write_markups_curves(out / "centerlines.mrk.json", [np.array([[0, 0, 0], [0, 0, 5.0]])], [[1.0, 0.8]])
    stack = np.random.default_rng(7).random((3, 10, 12)).astype(np.float32)
    write_stack(out / "renderings.nrrd", stack, pixel_spacing=(0.5, 0.25))
    (out / "metrics.json").write_text(json.dumps({"dice": 0.8}))
    (out / "run.log").write_text("log\n")
    (out / "simulation.json").write_text("{}")
    (out / "dataset").mkdir()
    manifest = {"task": "reconstruct", "outputs": [
        {"role": "volume", "path": "volume.nii.gz", "description": "attenuation"},
        {"role": "vessel_mask", "path": "vessel_mask.nrrd", "segment_names": ["vessels"]},
        {"role": "time_to_peak", "path": "ttp.nrrd"},
        {"role": "mesh", "path": "mesh.vtp", "color": [0.8, 0.1, 0.1]},
        {"role": "centerlines", "path": "centerlines.mrk.json"},
        {"role": "renderings", "path": "renderings.nrrd", "index_values": [0.0, 0.5, 1.0],
         "index_name": "time", "index_unit": "s"},
        {"role": "metrics", "path": "metrics.json"},
        {"role": "log", "path": "run.log"},
        {"role": "truth", "path": "simulation.json"},
        {"role": "dataset", "path": "dataset"},
    ]}
    (out / "manifest.json").write_text(json.dumps(manifest))

    loaded = mrml_io.load_manifest(mrml_scene.scene, out / "manifest.json")
    assert sorted(loaded.nodes) == ["centerlines", "mesh", "metrics", "renderings", "time_to_peak",
                                    "vessel_mask", "volume"]
    assert [o["role"] for o in loaded.skipped] == ["log", "truth", "dataset"]
    np.testing.assert_allclose(mrml_io.ijk_to_ras(loaded.first("volume")), FLIP @ m, atol=1e-6)
    assert loaded.first("vessel_mask").IsA("vtkMRMLSegmentationNode")
    assert loaded.first("vessel_mask").GetSegmentation().GetNthSegment(0).GetName() == "vessels"
    assert loaded.first("time_to_peak").GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"
    assert loaded.first("mesh").GetDisplayNode().GetColor() == pytest.approx((0.8, 0.1, 0.1))
    assert _measurement(loaded.first("centerlines")) == [1.0, 0.8]
    seq, browser = loaded.nodes["renderings"]
    assert seq.GetNumberOfDataNodes() == 3 and seq.GetNthIndexValue(1) == "0.5" and seq.GetIndexUnit() == "s"
    np.testing.assert_allclose(mrml_io.ijk_to_ras(seq.GetNthDataNode(0)), np.diag([-0.25, -0.5, 1.0, 1.0]))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(seq.GetNthDataNode(2))[0], stack[2])
    assert browser.IsA("vtkMRMLSequenceBrowserNode")
    assert loaded.first("metrics").GetCellText(0, 0) == "dice"
    # the temporary stack/label volumes are gone: only the volume, ttp, and the sequence proxy remain
    assert mrml_scene.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0
    assert mrml_scene.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 3

    only = mrml_io.load_manifest(mrml_scene.scene, out / "manifest.json", roles=["mesh"])
    assert list(only.nodes) == ["mesh"] and len(only.skipped) == 9
    with pytest.raises(ValueError, match="no scene representation"):
        mrml_io.load_output(mrml_scene.scene, {"role": "truth", "path": "simulation.json"}, out)


def test_scene_inputs_saved_for_the_engine(mrml_scene, tmp_path):
    from angiorecon.formats.mesh import read_mesh
    from angiorecon.formats.volume import read_volume

    sc = mrml_scene.scene
    m = _rotated_affine()
    data = np.random.default_rng(8).random((4, 5, 6)).astype(np.float32)
    vol = mrml_io.add_volume(sc, data, m, "CT")
    arr, grid = read_volume(mrml_io.save_volume(sc, vol, tmp_path / "ct.nrrd"))
    assert np.array_equal(arr, data)
    np.testing.assert_allclose(grid.affine, m, atol=1e-9)
    assert vol.GetStorageNode() is None

    pd, pts = _sphere_with_arrays()
    model = mrml_io.add_model(sc, pd, "Reference")
    verts, _, arrays = read_mesh(mrml_io.save_model(sc, model, tmp_path / "reference.vtp"))
    np.testing.assert_allclose(verts, pts, atol=1e-5)
    assert "Radius" in arrays

    frames = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    seq, _ = mrml_io.add_sequence(sc, frames, "Run", index_values=[0, 0.5, 1],
                                  frame_attributes=[{"XA.PositionerPrimaryAngle": str(a)} for a in (-10, 0, 10)])
    path = mrml_io.save_sequence(sc, seq, tmp_path / "run.seq.nrrd")
    seq2, browser = mrml_io.load_volume_sequence(sc, path, "Run again")
    assert seq2.GetNumberOfDataNodes() == 3 and seq2.GetNthIndexValue(1) == "0.5"
    assert seq2.GetNthDataNode(2).GetAttribute("XA.PositionerPrimaryAngle") == "10"
    assert np.array_equal(slicer.util.arrayFromVolume(seq2.GetNthDataNode(1))[0], frames[1])
    assert browser.GetProxyNode(seq2) is not None


def test_segmentation_saved_as_labelmap_on_reference_grid(mrml_scene, tmp_path):
    from angiorecon.formats.volume import read_volume

    sc = mrml_scene.scene
    m = _rotated_affine()
    ct = mrml_io.add_volume(sc, np.zeros((10, 12, 14), np.int16), m, "CT")
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[2:8, 3:9, 4:10] = 1
    mask[1:3, 1:3, 11:13] = 2
    seg = mrml_io.add_segmentation(sc, mask, m, "Vessels")
    labels, grid = read_volume(mrml_io.save_segmentation_labelmap(sc, seg, ct, tmp_path / "vessels.nrrd"))
    assert np.array_equal(labels, mask)
    np.testing.assert_allclose(grid.affine, m, atol=1e-9)
    assert sc.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_frames_saved_as_engine_stack(mrml_scene, tmp_path):
    import SimpleITK as sitk

    from angiorecon.formats.volume import read_stack

    frames = np.random.default_rng(9).random((4, 6, 7)).astype(np.float32)
    seq, _ = mrml_io.add_sequence(mrml_scene.scene, frames, "Fluoro", ijk_to_lps=np.diag([0.3, 0.2, 1.0, 1.0]))
    path = mrml_io.save_stack(mrml_scene.scene, seq, tmp_path / "fluoro.nrrd")
    assert np.array_equal(read_stack(path), frames)
    assert sitk.ReadImage(str(path)).GetSpacing() == pytest.approx((0.3, 0.2, 1.0))
    assert mrml_scene.scene.GetFirstNodeByName("Fluoro stack") is None


def test_frame_mask_from_an_edited_segmentation_reads_in_the_engine(mrml_scene, tmp_path):
    """A vessel drawn on frame 1 of a 3-frame run comes out as the engine's [1, rows, cols] mask."""
    from angiorecon.coronary.views import read_image_file

    sc = mrml_scene.scene
    drawn = np.zeros((3, 8, 10), np.uint8)
    drawn[1, 2:4, 1:9] = 1                       # a horizontal vessel on frame 1 (rows 2-3)
    drawn[2, 6, 5] = 1                           # something on another frame: ignored
    run = mrml_io.add_volume(sc, np.zeros((3, 8, 10), np.int16), np.diag([0.3, 0.3, 1.0, 1.0]), "XA run")
    seg = mrml_io.add_segmentation(sc, drawn, np.diag([0.3, 0.3, 1.0, 1.0]), "Vessels view 1")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(run)
    path = mrml_io.save_frame_mask(sc, seg, 1, tmp_path / "mask_view1.nrrd")
    np.testing.assert_array_equal(read_image_file(path) > 0, drawn[1] > 0)
    with pytest.raises(ValueError, match="nothing drawn on frame 0"):
        mrml_io.save_frame_mask(sc, seg, 0, tmp_path / "m0.nrrd")
    with pytest.raises(ValueError, match="frame 5 is outside"):
        mrml_io.save_frame_mask(sc, seg, 5, tmp_path / "m5.nrrd")
