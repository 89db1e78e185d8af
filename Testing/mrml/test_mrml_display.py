"""Result display helpers under slicer-core: coverage plot, vessel volume rendering, time-to-peak
colours, side-by-side layout, DICOM provenance of scene inputs, and their ``.mrb`` round trip."""

from __future__ import annotations

import numpy as np
import pytest

import module_paths  # noqa: F401  (puts the module folders on sys.path)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
pytestmark = pytest.mark.mrml
pytest_plugins = ["slicer_fixtures"]  # mrml_scene, new_mrml_scene

from DSAReconstructionLib import mrml_io  # noqa: E402  (needs slicer)


def _column(table, name) -> list[str]:
    t = table.GetTable()
    col = t.GetColumnByName(name)
    assert col is not None, name
    return [col.GetValue(i) for i in range(col.GetNumberOfTuples())]


def test_coverage_plot_table_and_chart(mrml_scene):
    sc = mrml_scene.scene
    angles = np.linspace(-100.0, 100.0, 11)
    table, chart = mrml_io.add_coverage_plot(sc, angles, [0, 5, 10, 5], "Coverage", times_s=np.arange(11) * 0.1)
    assert table.IsA("vtkMRMLTableNode") and chart.IsA("vtkMRMLPlotChartNode")
    assert _column(table, "Frame") == list(range(11))
    np.testing.assert_allclose(_column(table, "Angle (deg)"), angles)
    chosen = np.array(_column(table, "Chosen angle (deg)"))
    assert np.flatnonzero(np.isfinite(chosen)).tolist() == [0, 5, 10]
    np.testing.assert_allclose(chosen[[0, 5, 10]], [-100.0, 0.0, 100.0])
    np.testing.assert_allclose(_column(table, "Time (s)"), np.arange(11) * 0.1)
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert [s.GetYColumnName() for s in series] == ["Angle (deg)", "Chosen angle (deg)"]
    assert all(s.GetTableNode() is table and s.GetXColumnName() == "Frame" for s in series)
    assert series[1].GetMarkerStyle() == series[1].MarkerStyleCircle
    assert series[1].GetLineStyle() == series[1].LineStyleNone
    assert "3 of 11 views" in chart.GetTitle()
    with pytest.raises(ValueError, match="outside the run"):
        mrml_io.add_coverage_plot(sc, angles, [11], "Bad")


def test_vessel_rendering_hides_background(mrml_scene):
    sc = mrml_scene.scene
    data = np.zeros((6, 6, 6), np.float32)
    data[2:4, 2:4, :] = 1.0
    vol = mrml_io.add_volume(sc, data, np.eye(4), "Vessels")
    display = mrml_io.add_vessel_rendering(vol, 0.3, mrml_scene.logic("VolumeRendering"))
    assert display.IsA("vtkMRMLVolumeRenderingDisplayNode") and display.GetVisibility()
    assert any(vol.GetNthDisplayNode(i) is display for i in range(vol.GetNumberOfDisplayNodes()))
    opacity = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    assert opacity.GetValue(0.0) == 0.0 and opacity.GetValue(0.3) == 0.0
    assert opacity.GetValue(1.0) == pytest.approx(0.9) and opacity.GetValue(0.5) > 0.3


def test_time_to_peak_colours_and_threshold(mrml_scene):
    sc = mrml_scene.scene
    ttp = np.zeros((4, 4, 4), np.float32)
    ttp[1:3, 1:3, 1:3] = [[[1.0, 2.0], [2.5, 3.0]], [[1.5, 2.0], [2.2, 4.0]]]
    vol = mrml_io.add_volume(sc, ttp, np.eye(4), "TTP")
    display = mrml_io.show_time_to_peak(vol, 0.0)
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"
    assert display.GetColorNode() is not None
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 4.0)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() > 0.0


def test_side_by_side_layout_puts_volumes_in_red_and_yellow(mrml_scene):
    sc = mrml_scene.scene
    for name in ("Red", "Yellow", "Green"):
        composite = sc.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
    a = mrml_io.add_volume(sc, np.zeros((1, 4, 4), np.float32), np.eye(4), "measured")
    b = mrml_io.add_volume(sc, np.ones((1, 4, 4), np.float32), np.eye(4), "rendered")
    layout = mrml_io.show_side_by_side(sc, a, b)
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    by_name = {sc.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName():
               sc.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetBackgroundVolumeID() for i in range(3)}
    assert by_name == {"Red": a.GetID(), "Yellow": b.GetID(), "Green": None}


class _FakeDicomDatabase:
    """The four ``ctkDICOMDatabase`` queries used, over a two-run study and an unrelated CT."""

    def __init__(self):
        self.files = {"fill1": "/d/fill1.dcm", "fill2": "/d/fill2.dcm"}
        self.series = {"S-fill": ["/d/fill1.dcm", "/d/fill2.dcm"], "S-mask": ["/d/mask1.dcm"], "S-ct": ["/d/ct.dcm"]}

    def fileForInstance(self, uid):
        return self.files.get(uid, "")

    def instanceValue(self, uid, tag):
        assert tag == mrml_io.STUDY_UID_TAG
        return "STUDY" if uid in self.files else ""

    def seriesForStudy(self, study):
        return list(self.series) if study == "STUDY" else []

    def filesForSeries(self, series):
        return self.series[series]

    def fileValue(self, path, tag):
        assert tag == mrml_io.MODALITY_TAG
        return "CT" if "ct" in path else "XA"


def test_source_dicom_files_of_a_scene_sequence(mrml_scene):
    sc = mrml_scene.scene
    seq, _ = mrml_io.add_sequence(sc, np.zeros((2, 3, 3), np.int16), "XA run")
    db = _FakeDicomDatabase()
    with pytest.raises(ValueError, match="not loaded from DICOM"):
        mrml_io.source_dicom_files(sc, seq, db)
    seq.SetAttribute("DICOM.instanceUIDs", "fill1 fill2")
    assert mrml_io.source_dicom_files(sc, seq, db) == ["/d/fill1.dcm", "/d/fill2.dcm", "/d/mask1.dcm"]
    seq.SetAttribute("DICOM.instanceUIDs", "gone")
    with pytest.raises(ValueError, match="no longer in the DICOM database"):
        mrml_io.source_dicom_files(sc, seq, db)


def test_display_nodes_round_trip_through_mrb(mrml_scene, new_mrml_scene, tmp_path):
    sc = mrml_scene.scene
    data = np.zeros((5, 5, 5), np.float32)
    data[2] = 2.0
    vol = mrml_io.add_volume(sc, data, np.eye(4), "Vessels")
    mrml_io.add_vessel_rendering(vol, 0.5, mrml_scene.logic("VolumeRendering"))
    mrml_io.add_coverage_plot(sc, np.linspace(0.0, 90.0, 7), [0, 3, 6], "Coverage")
    path = tmp_path / "display.mrb"
    assert sc.WriteToMRB(str(path))
    sc2 = new_mrml_scene().scene
    assert sc2.ReadFromMRB(str(path))
    chart = sc2.GetFirstNodeByName("Coverage")
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    table = sc2.GetFirstNodeByName("Coverage table")
    chosen = np.array(_column(table, "Chosen angle (deg)"), float)
    np.testing.assert_allclose(chosen[[0, 3, 6]], [0.0, 45.0, 90.0])
    assert np.isnan(chosen[[1, 2, 4, 5]]).all()
    prop = sc2.GetFirstNodeByName("Vessels vessels")
    assert prop is not None and prop.IsA("vtkMRMLVolumePropertyNode")
    assert prop.GetVolumeProperty().GetScalarOpacity().GetValue(2.0) == pytest.approx(0.9)


def test_present_results_of_a_reconstruction(mrml_scene, tmp_path):
    """Loaded like a ``reconstruct`` run: vessel preset at the manifest's threshold, time-to-peak
    colours, measured vs rendered projections side by side (measured left)."""
    import json

    from angiorecon.formats.volume import write_stack, write_volume
    from angiorecon.geometry import VolumeGrid

    sc = mrml_scene.scene
    for name in ("Red", "Yellow"):
        sc.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(name)
    grid = VolumeGrid.centered((6, 6, 6), (1.0, 1.0, 1.0))
    vessel = np.zeros(grid.shape, np.float32)
    vessel[2:4, 2:4, :] = 0.02
    write_volume(tmp_path / "volume.nrrd", vessel, grid)
    write_volume(tmp_path / "time_to_peak.nrrd", np.where(vessel > 0, 1.5, 0.0).astype(np.float32), grid)
    rng = np.random.default_rng(0)
    write_stack(tmp_path / "renderings" / "rendered.nii.gz", rng.random((3, 4, 5)).astype(np.float32), (0.5, 0.5))
    write_stack(tmp_path / "renderings" / "measured.nii.gz", rng.random((3, 4, 5)).astype(np.float32), (0.5, 0.5))
    (tmp_path / "manifest.json").write_text(json.dumps({
        "task": "reconstruct", "segmentation": {"threshold_low": 0.004, "threshold_high": 0.01},
        "outputs": [{"role": "volume", "path": "volume.nrrd"}, {"role": "time_to_peak", "path": "time_to_peak.nrrd"},
                    {"role": "renderings", "path": "renderings/rendered.nii.gz", "index_name": "frame"},
                    {"role": "renderings", "path": "renderings/measured.nii.gz", "index_name": "frame"}]}))
    loaded = mrml_io.load_manifest(sc, tmp_path / "manifest.json")
    shown = mrml_io.present_results(sc, loaded, mrml_scene.logic("VolumeRendering"))
    assert set(shown) == {"rendering", "time_to_peak", "layout"}
    opacity = shown["rendering"].GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    assert opacity.GetValue(0.004) == 0.0 and opacity.GetValue(0.02) == pytest.approx(0.9)
    assert shown["time_to_peak"].GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"
    assert shown["layout"].GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    backgrounds = {}
    for i in range(2):
        composite = sc.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        backgrounds[composite.GetLayoutName()] = sc.GetNodeByID(composite.GetBackgroundVolumeID())
    measured_seq = sc.GetFirstNodeByName("measured")
    assert measured_seq.IsA("vtkMRMLSequenceNode") and measured_seq.GetNumberOfDataNodes() == 3
    browser = sc.GetFirstNodeByName("measured browser")
    assert backgrounds["Red"] is browser.GetProxyNode(measured_seq)
    assert backgrounds["Yellow"].GetName().startswith("rendered")
    assert mrml_io.rendering_threshold({}, loaded.first("volume")) == pytest.approx(0.01)


def test_overlay_pictures_load_upright(mrml_scene, tmp_path):
    """Coronary reprojection overlays (PNG, role ``overlays``) load as colour images, top row on top;
    previews stay files."""
    import json

    import matplotlib.image

    picture = np.zeros((6, 9, 3), np.float32)
    picture[0, 0] = [1.0, 0.0, 0.0]        # top-left red
    picture[5, 8] = [0.0, 0.0, 1.0]        # bottom-right blue
    (tmp_path / "overlays").mkdir()
    matplotlib.image.imsave(tmp_path / "overlays" / "view_1.png", picture)
    matplotlib.image.imsave(tmp_path / "mip.png", picture)
    (tmp_path / "manifest.json").write_text(json.dumps({"task": "coronary", "outputs": [
        {"role": "overlays", "path": "overlays/view_1.png"}, {"role": "preview", "path": "mip.png"}]}))
    loaded = mrml_io.load_manifest(mrml_scene.scene, tmp_path / "manifest.json")
    node = loaded.first("overlays")
    assert node.IsA("vtkMRMLVectorVolumeNode") and [o["path"] for o in loaded.skipped] == ["mip.png"]
    assert node.GetImageData().GetDimensions() == (9, 6, 1)
    arr = slicer.util.arrayFromVolume(node)[0]          # [j, i, rgb(a)]
    ras_of = mrml_io.ijk_to_ras(node)
    top_left = np.flatnonzero((arr[..., 0] > 200) & (arr[..., 2] < 50))
    j, i = np.unravel_index(top_left[0], arr.shape[:2])
    red_ras = ras_of @ [i, j, 0, 1]
    j2, i2 = np.unravel_index(np.flatnonzero((arr[..., 2] > 200) & (arr[..., 0] < 50))[0], arr.shape[:2])
    blue_ras = ras_of @ [i2, j2, 0, 1]
    # axial view: anterior (A) up, patient right (R) on the screen's left
    assert red_ras[1] > blue_ras[1] and red_ras[0] > blue_ras[0]


def test_browser_of_a_sequence_and_synchronised_result(mrml_scene):
    """What the deep-DSA display does: find the input's browser, play the result with it, side by side."""
    sc = mrml_scene.scene
    for name in ("Red", "Yellow"):
        sc.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(name)
    fluoro, browser = mrml_io.add_sequence(sc, np.zeros((3, 4, 5), np.float32), "fluoro")
    result, _ = mrml_io.add_sequence(sc, np.ones((3, 4, 5), np.float32), "ddsa")
    lone = sc.AddNewNodeByClass("vtkMRMLSequenceNode", "lone")
    assert mrml_io.browser_of(sc, fluoro) is browser and mrml_io.browser_of(sc, lone) is None
    browser.AddSynchronizedSequenceNode(result)
    mrml_scene.logic("Sequences").UpdateProxyNodesFromSequences(browser)
    left, right = browser.GetProxyNode(fluoro), browser.GetProxyNode(result)
    assert left is not None and right is not None
    mrml_io.show_side_by_side(sc, left, right)
    browser.SetSelectedItemNumber(2)
    assert sc.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == \
        slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
