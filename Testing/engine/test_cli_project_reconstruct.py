"""CLI tasks ``project``, ``reconstruct`` and ``demo`` end to end (subprocesses, small sizes)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from conftest import json_events, run_engine

from angiorecon.formats.dataset import DSADataset, read_dataset, write_dataset
from angiorecon.formats.volume import read_stack, write_volume
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.operators import forward_project
from angiorecon.simulation.phantoms import vessel_phantom

GRID = VolumeGrid.centered((40, 40, 36), 2.0)
GEOM = ConeBeamGeometry.circular(np.linspace(0, np.deg2rad(200), 40), 750.0, 1200.0, (56, 60), 2.6)
PHANTOM = vessel_phantom(1.0, 0.02)


def test_reconstruct_fdk_and_sart_from_dataset(tmp_path):
    truth = PHANTOM.voxelize(GRID, 2)
    write_dataset(tmp_path / "ds", DSADataset(GEOM, GRID, projections=PHANTOM.line_integrals(GEOM).astype(np.float32)))
    out = tmp_path / "fdk"
    res = run_engine("reconstruct", tmp_path / "ds", "--method", "fdk", "--views", 20, "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    outputs = {(o["role"], o["path"]) for o in manifest["outputs"]}
    assert {("volume", "volume.nii.gz"), ("preview", "mip.png"), ("vessel_mask", "vessel_mask.nii.gz"),
            ("mesh", "vessels.vtp"), ("centerlines", "centerlines.mrk.json"),
            ("renderings", "renderings/rendered.nii.gz"), ("preview", "renderings.png")} <= outputs
    assert not any(role in ("sequence", "time_to_peak") for role, _ in outputs)   # FDK is static
    assert manifest["projection_metrics"]["held_out"]["psnr_raw"] > 20
    assert manifest["reconstruction"]["views"] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                                                   32, 34, 36, 38]
    img = sitk.ReadImage(str(out / "volume.nii.gz"))
    assert img.GetSize() == (40, 40, 36)
    assert np.allclose(img.GetSpacing(), 2.0) and np.allclose(img.GetOrigin(), [-39.0, -39.0, -35.0])
    vol = sitk.GetArrayFromImage(img)
    assert np.corrcoef(vol.ravel(), truth.ravel())[0, 1] > 0.8
    assert (out / "mip.png").stat().st_size > 100

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"dataset": str(tmp_path / "ds"), "method": "sart", "views": [0, 5, 10, 15, 20, 25, 30, 35],
                               "params": {"iterations": 3, "subsets": 2}, "format": "nrrd"}))
    res = run_engine("reconstruct", "--job", job, "--out", tmp_path / "sart", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert json_events(res.stdout)[-1]["event"] == "result"
    sart = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "sart" / "volume.nrrd")))
    assert sart.min() >= 0 and np.corrcoef(sart.ravel(), truth.ravel())[0, 1] > 0.7   # 8 views, 3 iterations


def test_project_volume_with_transforms_json(tmp_path):
    vol = PHANTOM.voxelize(GRID, 1)
    write_volume(tmp_path / "v.nrrd", vol, GRID)
    write_dataset(tmp_path / "geo", DSADataset(GEOM, GRID))
    res = run_engine("project", "--volume", tmp_path / "v.nrrd", "--geometry", tmp_path / "geo" / "transforms.json",
                     "--out", tmp_path / "p", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    stack = read_stack(tmp_path / "p" / "proj.nii.gz")
    assert stack.shape == (40, 56, 60)
    assert np.allclose(stack, forward_project(vol, GRID, GEOM), rtol=1e-5, atol=1e-6)
    again = read_dataset(tmp_path / "p")             # the output folder is itself a dataset
    assert np.allclose(again.geometry.source, GEOM.source) and again.grid.shape == GRID.shape
    roles = {o["role"] for o in json.loads((tmp_path / "p" / "manifest.json").read_text())["outputs"]}
    assert roles == {"projections", "dataset", "other"}


def test_bad_inputs_are_one_line_errors(tmp_path):
    res = run_engine("reconstruct", tmp_path / "missing", "--method", "fdk", "--out", tmp_path / "o")
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = run_engine("reconstruct", tmp_path, "--method", "nope", "--out", tmp_path / "o2")
    assert res.returncode == 2 and "unknown method 'nope'" in res.stderr
    assert "Traceback" not in res.stderr


def test_demo_small(tmp_path):
    """The README demo, scaled down: real-CT simulation → reconstruction → metrics vs the true mask.

    At this size (12 views of 64²) only the plumbing is checked; reconstruction quality is the
    business of the phantom tests and the benchmarks.
    """
    res = run_engine("demo", "--views", 12, "--detector", 64, "--methods", "kinetic,fdk",
                     "--out", tmp_path / "d", "--device", "cpu", timeout=600)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    for method in ("kinetic", "fdk"):
        assert 0 < metrics[method]["dice"] <= 1 and metrics[method]["hd95_mm"] > 0
    for name in ("simulation/dataset/transforms.json", "simulation/truth/vessel_mask.nii.gz",
                 "kinetic/volume.nii.gz", "kinetic/filling.seq.nrrd", "kinetic/vessels.vtp",
                 "kinetic/centerlines.mrk.json", "kinetic/renderings.png", "fdk/mip.png"):
        assert (tmp_path / "d" / name).exists(), name
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert ("sequence", "kinetic/filling.seq.nrrd") in {(o["role"], o["path"]) for o in manifest["outputs"]}
