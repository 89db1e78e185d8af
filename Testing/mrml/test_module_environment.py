"""Slicer-free helpers of the panels: run coverage from the engine's geometry readers."""

from __future__ import annotations

import numpy as np
import pytest

import module_paths
from DSAReconstructionLib import coverage


def test_rotation_angles_follow_the_engine_geometry():
    from angiorecon.geometry import ConeBeamGeometry

    angles = np.deg2rad(np.linspace(-100.0, 100.0, 9))
    geometry = ConeBeamGeometry.circular(angles, 750.0, 1200.0, (8, 8), 1.0)
    got = coverage.rotation_angles_deg(geometry.source)
    np.testing.assert_allclose(np.diff(got), np.full(8, 25.0), atol=1e-9)
    assert got[-1] - got[0] == pytest.approx(200.0)


def test_run_coverage_of_a_dataset_folder(tmp_path):
    from angiorecon.formats.dataset import DSADataset, write_dataset
    from angiorecon.geometry import ConeBeamGeometry, VolumeGrid

    n = 12
    geometry = ConeBeamGeometry.circular(np.deg2rad(np.linspace(0.0, 198.0, n)), 750.0, 1200.0, (6, 8), 1.0,
                                         times=np.arange(n) * 0.1)
    dataset = DSADataset(geometry, VolumeGrid.centered((4, 4, 4), (1.0, 1.0, 1.0)),
                         projections=np.zeros((n, 6, 8), np.float32))
    write_dataset(tmp_path / "run", dataset)
    cov = coverage.run_coverage([tmp_path / "run"], 4)
    np.testing.assert_allclose(cov.angles_deg - cov.angles_deg[0], np.linspace(0.0, 198.0, n), atol=1e-6)
    np.testing.assert_allclose(cov.times_s, np.arange(n) * 0.1)
    assert cov.chosen.tolist() == [0, 3, 6, 9]
    assert coverage.run_coverage([tmp_path / "run"], [1, 5]).chosen.tolist() == [1, 5]


def test_requirements_files_parse_and_missing_ones_are_found(tmp_path):
    from importlib.metadata import PackageNotFoundError

    from DSAReconstructionLib import environment

    for module in module_paths.MODULES:
        reqs = environment.read_requirements(module_paths.REPO / module / "Resources" / "requirements.txt")
        assert "numpy>=1.24" in reqs and not any(r.startswith(("torch", "vtk")) for r in reqs)
    installed = {"numpy": "2.1.0", "scipy": "1.9.0", "torch": "0.1"}

    def version_of(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]

    reqs = ["numpy>=1.24", "scipy>=1.10", "SimpleITK>=2.3", "torch>=2.1", "pywin32>=1; sys_platform == 'win32'"]
    assert environment.missing_requirements(reqs, version_of) == ["scipy>=1.10", "SimpleITK>=2.3"]
    (tmp_path / "bad.txt").write_text("# ok\nnumpy>=1\nnot a requirement !!\n")
    with pytest.raises(ValueError, match="bad.txt:3"):
        environment.read_requirements(tmp_path / "bad.txt")
    assert environment.canonical_name("Scikit_Image") == "scikit-image"


def test_gpu_names_from_the_driver():
    import subprocess

    from DSAReconstructionLib import environment

    def smi(out, rc=0):
        return lambda *a, **k: subprocess.CompletedProcess(a[0], rc, stdout=out, stderr="")

    def absent(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    assert environment.gpu_names(smi("NVIDIA H100 80GB HBM3\n")) == ["NVIDIA H100 80GB HBM3"]
    assert environment.gpu_names(absent) == [] and environment.gpu_names(smi("", 9)) == []
    assert environment.device_description(["NVIDIA H100 80GB HBM3"]) == "GPU: NVIDIA H100 80GB HBM3"
    assert environment.device_description(["A", "B"]) == "GPU: A (+1 more)"
    assert "CPU" in environment.device_description([])
