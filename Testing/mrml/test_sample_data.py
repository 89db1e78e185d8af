"""Sample cases for SampleData: shipped files exist, a generated case is simulated once by the real
engine, cached, and loads into a headless scene with the module's inputs pointing at its files."""

from __future__ import annotations

import pytest

import module_paths  # noqa: F401  (puts the module folders on sys.path)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
pytestmark = pytest.mark.mrml
pytest_plugins = ["slicer_fixtures"]  # mrml_scene, sample_cache

from DSAReconstructionLib import mrml_io  # noqa: E402  (needs slicer)
from SyntheticDSALib import samples  # noqa: E402


def test_every_case_targets_a_module_and_its_parameters():
    from test_module_files import _parameter_fields

    assert {c.module for c in samples.SAMPLES.values()} == set(module_paths.MODULES)
    for case in samples.SAMPLES.values():
        assert set(case.inputs) <= set(_parameter_fields(case.module)), case.name
        assert (case.job is None) == (case.name == "AngioReconAortaCTA")
    files = samples.shipped_files("AngioReconAortaCTA")
    assert files["ct"].is_file() and files["vessels"].is_file()


def test_shipped_case_loads(mrml_scene):
    files = samples.shipped_files("AngioReconAortaCTA")
    ct = mrml_io.load_volume(mrml_scene.scene, files["ct"], "AortaCTA")
    seg = mrml_io.load_segmentation(mrml_scene.scene, files["vessels"], "Aorta vessels")
    assert ct.GetImageData().GetScalarRange()[0] < -500
    assert seg.GetSegmentation().GetNumberOfSegments() >= 1


def test_rotational_case_is_simulated_once_and_loads(mrml_scene, sample_cache):
    name = "AngioReconRotationalRun"
    manifest = samples.ensure_sample(name, sample_cache)
    stamp = manifest.stat().st_mtime_ns
    assert samples.ensure_sample(name, sample_cache) == manifest
    assert manifest.stat().st_mtime_ns == stamp  # cached: not simulated again
    inputs = samples.module_inputs(name, manifest)
    assert (inputs["inputPath"] / "transforms.json").is_file()
    loaded = mrml_io.load_manifest(mrml_scene.scene, manifest, list(samples.SAMPLES[name].roles))
    assert loaded.first("vessel_mask").IsA("vtkMRMLSegmentationNode")
    assert loaded.first("mesh").IsA("vtkMRMLModelNode") and loaded.first("mesh").GetPolyData().GetNumberOfPoints() > 0
