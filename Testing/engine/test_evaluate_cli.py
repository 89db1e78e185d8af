"""``angiorecon evaluate`` end to end through the worker protocol (small synthetic inputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from angiorecon.formats.markups import write_markups_curves
from angiorecon.formats.volume import write_stack, write_volume
from angiorecon.geometry import VolumeGrid
from angiorecon.metrics import evaluate_volumes
from angiorecon.vessels.surface import mask_to_mesh
from conftest import json_events, run_engine
from vessel_shapes import Tube, intensity, voxelise

GRID = VolumeGrid.centered((40, 32, 48), 0.5)
TUBES = [Tube((-6, 0, -9), (0, 0, 0), 2.0), Tube((0, 0, 0), (7, 3, 8), 1.3), Tube((0, 0, 0), (-5, 4, 9), 1.1)]


def test_evaluate_intensity_volumes_with_reference_centerlines(tmp_path):
    ref = intensity(TUBES, GRID, peak=0.02, noise=0.0005, seed=2)          # 4DRGS-like units
    pred = intensity(TUBES, GRID, peak=0.02, noise=0.0005, seed=3)
    write_volume(tmp_path / "pred.nii.gz", pred, GRID)
    write_volume(tmp_path / "ref.nrrd", ref, GRID)
    curves, radii = zip(*[t.centerline(40) for t in TUBES])
    write_markups_curves(tmp_path / "truth.mrk.json", curves, radii)
    out = tmp_path / "out"
    res = run_engine("evaluate", tmp_path / "pred.nii.gz", "--reference", tmp_path / "ref.nrrd",
                     "--reference-centerlines", tmp_path / "truth.mrk.json", "--samples", "5000",
                     "--out", out, "--events", "json")
    assert res.returncode == 0, res.stderr
    assert json_events(res.stdout)[-1]["event"] == "result"
    m = json.loads((out / "metrics.json").read_text())
    assert m["segmentation"]["pred"]["segmented"] and m["segmentation"]["ref"]["segmented"]
    assert m["volume"]["dice"] > 0.95 and m["volume"]["cldice"] > 0.95
    assert m["surface"]["cd_sum"] < 0.3 and m["anchors"]["cd"] < 0.3
    assert m["centerlines"]["ref_source"] == "given" and m["centerlines"]["completeness"] > 0.95
    assert m["image"]["psnr_3d"] > 20
    manifest = json.loads((out / "manifest.json").read_text())
    roles = {o["path"]: o["role"] for o in manifest["outputs"]}
    assert roles["metrics.json"] == "metrics" and "dice" in manifest["summary"]
    assert roles["pred_mask.nii.gz"] == "vessel_mask" and roles["pred_surface.vtp"] == "mesh"
    assert roles["pred_centerlines.mrk.json"] == "centerlines" and roles["ref_centerlines.mrk.json"] == "centerlines"
    from angiorecon.formats.mesh import read_mesh

    _, _, arrays = read_mesh(out / "pred_surface.vtp")
    assert np.percentile(arrays["DistanceToReference"], 95) < 0.5


def test_shifted_mask_on_another_grid_and_meshes(tmp_path):
    ref = voxelise(TUBES, GRID)
    # the prediction lives on a coarser grid and is shifted by 1 mm in x
    pgrid = VolumeGrid.centered((30, 24, 36), 0.7, center=(0.3, 0.0, 0.0))
    shifted = [Tube(tuple(np.add(t.p0, [1.0, 0, 0])), tuple(np.add(t.p1, [1.0, 0, 0])), t.r0) for t in TUBES]
    pred = voxelise(shifted, pgrid)
    direct = evaluate_volumes(pred.astype(np.uint8), ref.astype(np.uint8), GRID, pred_grid=pgrid,
                              n_samples=5000, centerlines=False)
    assert direct["resampled"] and direct["segmentation"]["pred"]["method"] == "mask"
    assert direct["surface"]["cd_sum"] > 1.0 > direct["anchors"]["cd"] + 0.3   # ICP hides the shift
    assert 0.3 < direct["volume"]["dice"] < 0.8
    write_volume(tmp_path / "ref.nii.gz", ref.astype(np.uint8), GRID)
    mask_to_mesh(pred, pgrid).write(tmp_path / "pred.vtp")
    res = run_engine("evaluate", tmp_path / "pred.vtp", "--reference", tmp_path / "ref.nii.gz",
                     "--samples", "5000", "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["surface"]["cd_sum"] == pytest.approx(direct["surface"]["cd_sum"], rel=0.15)
    assert "ref.nii.gz" in m["segmentation"]


def test_projection_metrics_with_and_without_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.random((3, 24, 24)).astype(np.float32)
    write_stack(tmp_path / "ref.nii.gz", ref)
    write_stack(tmp_path / "pred.nii.gz", 2 * ref)
    job = tmp_path / "job.json"      # the way the Slicer modules call the worker
    job.write_text(json.dumps({"pred": str(tmp_path / "pred.nii.gz"), "reference": str(tmp_path / "ref.nii.gz"),
                               "kind": "projections"}))
    res = run_engine("evaluate", "--job", job, "--out", tmp_path / "p")
    assert res.returncode == 0, res.stderr
    assert json_events(res.stdout)[-1]["event"] == "result"
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())["projections"]
    assert m["ssim_minmax"] == pytest.approx(1.0) and m["psnr_raw"] < 10 and len(m["per_frame"]["psnr_raw"]) == 3

def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    from angiorecon.cli import main

    write_stack(tmp_path / "ref.nii.gz", np.zeros((2, 8, 8), np.float32))
    code = main(["evaluate", str(tmp_path / "nope.nii.gz"), "--reference", str(tmp_path / "ref.nii.gz"),
                 "--out", str(tmp_path / "x"), "--events", "quiet"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("x")
    code = main(["evaluate", str(tmp_path / "a.txt"), "--reference", str(tmp_path / "ref.nii.gz"),
                 "--out", str(tmp_path / "y"), "--events", "quiet"])
    assert code == 2 and "unknown file type" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
