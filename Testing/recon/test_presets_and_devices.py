"""Every dynamic method's ``paper`` preset runs end to end through the CLI, and ``--device cuda`` works or fails cleanly.

The paper presets keep their published architecture (hash-grid sizes, Gaussian counts, knots);
only the iteration count is cut with ``--param`` so the test stays small on a CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_engine

from angiorecon.formats.dataset import DSADataset, write_dataset
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.simulation.phantoms import vessel_phantom

GRID = VolumeGrid.centered((24, 24, 20), 3.0)
GEOM = ConeBeamGeometry.circular(np.linspace(0, np.deg2rad(200), 24), 750.0, 1200.0, (32, 36), 4.0)
SHORT = {"kinetic": ["--param", "rounds=1"],
         "vpal": ["--param", "iterations=3"],
         "4drgs": ["--param", "iterations=3", "--param", "n_init=2000"]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets") / "ds"
    proj = vessel_phantom(1.0, 0.02).line_integrals(GEOM).astype(np.float32)
    write_dataset(root, DSADataset(GEOM, GRID, projections=proj))
    return root


@pytest.mark.parametrize("method", ["kinetic", "vpal", "4drgs"])
def test_paper_preset_runs_end_to_end(dataset, tmp_path, method):
    out = tmp_path / method
    res = run_engine("reconstruct", dataset, "--method", method, "--preset", "paper", "--views", 12,
                     *SHORT[method], "--skip", "renderings", "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    roles = {o["role"] for o in manifest["outputs"]}
    assert {"volume", "vessel_mask", "sequence", "time_to_peak"} <= roles
    assert manifest["reconstruction"]["method"] == method
    assert manifest["reconstruction"]["info"]["preset"] == "paper"


def test_cuda_request_without_cuda_is_a_clean_error(dataset, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by test_methods_run_on_cuda")
    res = run_engine("reconstruct", dataset, "--method", "vpal", "--views", 12, "--out", tmp_path / "o",
                     "--device", "cuda")
    assert res.returncode == 4
    assert "no CUDA device" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method", ["kinetic", "vpal", "4drgs", "fdk", "sart"])
def test_methods_run_on_cuda(dataset, tmp_path, method):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    res = run_engine("reconstruct", dataset, "--method", method, "--views", 12, *SHORT.get(method, []),
                     "--skip", "mesh,centerlines,renderings", "--out", tmp_path / method, "--device", "cuda")
    assert res.returncode == 0, res.stderr
