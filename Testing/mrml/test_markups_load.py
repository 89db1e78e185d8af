"""Our ``.mrk.json`` centerlines load into a slicer-core MRML scene as curves with ``Radius``."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.formats.markups import write_markups_curves

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
pytestmark = pytest.mark.mrml


@pytest.fixture
def scene():
    """A bare scene with the Markups logic attached (registers the markups node/storage classes)."""
    sc = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerMarkupsLogic()
    logic.SetMRMLScene(sc)
    yield sc, logic
    sc.Clear(1)


def _tree():
    trunk = np.stack([np.zeros(6), np.zeros(6), np.linspace(0, 25, 6)], axis=1) + [10.0, -20.0, 5.0]
    child = np.stack([np.linspace(0, 12, 4), np.zeros(4), np.full(4, 25.0)], axis=1) + [10.0, -20.0, 5.0]
    return [trunk, child], [np.linspace(3.0, 2.0, 6), np.linspace(1.5, 1.0, 4)]


def test_storage_node_reads_curve_with_radius(tmp_path, scene):
    sc, _ = scene
    curves, radii = _tree()
    path = write_markups_curves(tmp_path / "tree.mrk.json", curves, radii, names=["Vessel (0)", "Vessel (1)"])
    storage = sc.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    node = storage.AddNewMarkupsNodeFromFile(str(path))
    assert node is not None and node.IsA("vtkMRMLMarkupsCurveNode")
    assert node.GetName() == "Vessel (0)"
    assert node.GetNumberOfControlPoints() == 6
    # the file is LPS; MRML holds RAS
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(2, ras)
    np.testing.assert_allclose(ras, curves[0][2] * [-1, -1, 1], atol=1e-9)
    meas = node.GetMeasurement("Radius")
    assert meas is not None and meas.GetUnits() == "mm"
    vals = meas.GetControlPointValues()
    np.testing.assert_allclose([vals.GetValue(i) for i in range(vals.GetNumberOfTuples())], radii[0])
    assert node.GetCurveLengthWorld() == pytest.approx(25.0, rel=1e-3)


def test_further_point_values_load_as_measurements(tmp_path, scene):
    """The coronary centerlines' per-point EpipolarAngle arrives in MRML next to Radius."""
    sc, _ = scene
    curves, radii = _tree()
    angles = [np.linspace(0.0, 50.0, 6), np.array([90.0, 80.0, 70.0, 60.0])]
    path = write_markups_curves(tmp_path / "tree.mrk.json", curves, radii,
                                point_values={"EpipolarAngle": ("deg", angles)})
    node = sc.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode").AddNewMarkupsNodeFromFile(str(path))
    meas = node.GetMeasurement("EpipolarAngle")
    assert meas is not None and meas.GetUnits() == "deg"
    vals = meas.GetControlPointValues()
    np.testing.assert_allclose([vals.GetValue(i) for i in range(vals.GetNumberOfTuples())], angles[0])
    assert node.GetMeasurement("Radius").GetControlPointValues().GetValue(0) == pytest.approx(3.0)


def test_markups_logic_loads_every_branch(tmp_path, scene):
    sc, logic = scene
    curves, radii = _tree()
    path = write_markups_curves(tmp_path / "tree.mrk.json", curves, radii)
    assert logic.LoadMarkups(str(path))
    nodes = sc.GetNodesByClass("vtkMRMLMarkupsCurveNode")
    assert nodes.GetNumberOfItems() == 2
    second = nodes.GetItemAsObject(1)
    assert second.GetNumberOfControlPoints() == 4
    assert second.GetMeasurement("Radius").GetControlPointValues().GetValue(3) == pytest.approx(1.0)


def test_centerline_model_loads_with_vmtk_arrays(tmp_path, scene):
    from angiorecon.vessels.centerlines import CenterlineTree

    sc, _ = scene
    curves, radii = _tree()
    tree = CenterlineTree.from_curves(curves, radii, [None, 0])
    path = tree.write_vtp(tmp_path / "centerlines.vtp")
    models = slicer.vtkSlicerModelsLogic()
    models.SetMRMLScene(sc)
    storage = sc.AddNewNodeByClass("vtkMRMLModelStorageNode")
    node = sc.AddNewNodeByClass("vtkMRMLModelNode", "Centerlines")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    pd = node.GetPolyData()
    assert pd.GetNumberOfLines() == 2 and pd.GetNumberOfPoints() == 10
    assert pd.GetPointData().GetArray("Radius").GetValue(0) == pytest.approx(3.0)
    for name in ("CenterlineIds", "GroupIds", "TractIds", "Blanking"):
        assert pd.GetCellData().GetArray(name) is not None
    # LPS on disk → RAS in the scene
    np.testing.assert_allclose(pd.GetPoint(0), curves[0][0] * [-1, -1, 1], atol=1e-6)
