"""Job dictionaries the module panels send to the engine tasks."""

from __future__ import annotations

import pytest

import module_paths  # noqa: F401  (puts the module folders on sys.path)
from CoronaryTwoViewLib.jobs import coronary_job
from DSAReconstructionLib import jobs
from SyntheticDSALib.jobs import ddsa_job, simulate_job


def test_view_list_parsing():
    assert jobs.parse_view_list("0, 4 8-10;4") == [0, 4, 8, 9, 10]
    for bad, message in (("3-1", "backwards"), ("a", "not a frame number"), (" , ", "empty")):
        with pytest.raises(ValueError, match=message):
            jobs.parse_view_list(bad)


def test_reconstruct_job(tmp_path):
    job = jobs.reconstruct_job([tmp_path / "run"], method="vpal", views=[8, 0, 4], reference=tmp_path / "ref.vtp")
    assert job == {"inputs": [str(tmp_path / "run")], "method": "vpal", "views": [0, 4, 8], "preset": "fast",
                   "reference": str(tmp_path / "ref.vtp")}
    assert jobs.reconstruct_job(["x"], views=30)["views"] == 30
    with pytest.raises(ValueError, match="unknown method"):
        jobs.reconstruct_job(["x"], method="magic")
    with pytest.raises(ValueError, match="at least one input"):
        jobs.reconstruct_job([])


def test_roles_to_load():
    roles = jobs.roles_to_load({"volume": True, "mesh": False, "centerlines": True})
    assert roles == ["volume", "time_to_peak", "centerlines"]


def test_simulate_and_ddsa_jobs(tmp_path):
    job = simulate_job("two-view", tmp_path / "ct.nrrd", frames=2, seed=7)
    assert job == {"product": "two-view", "ct": str(tmp_path / "ct.nrrd"), "vessels": [],
                   "vessel_source": "synthetic", "frames": 2, "arc_deg": 200.0, "seed": 7}
    job = simulate_job("rotational", "ct.nrrd", vessel_masks=[tmp_path / "v.nrrd"])
    assert job["vessels"] == [str(tmp_path / "v.nrrd")] and job["vessel_source"] == "real"
    with pytest.raises(ValueError, match="unknown product"):
        simulate_job("movie", "ct.nrrd")
    assert ddsa_job([tmp_path / "f.nrrd"], tile=128) == {
        "inputs": [str(tmp_path / "f.nrrd")], "model": None, "tile": 128, "overlap": 32, "batch": 8}


def test_coronary_job(tmp_path):
    job = coronary_job(tmp_path / "a.dcm", tmp_path / "b.dcm", second_frame=12, segmentation="learned")
    assert job["views"] == [{"path": str(tmp_path / "a.dcm"), "frame": 0},
                            {"path": str(tmp_path / "b.dcm"), "frame": 12}]
    assert (job["frame_selection"], job["segmentation"], job["method"]) == ("index", "learned", "default")
    with pytest.raises(ValueError, match="unknown method"):
        coronary_job("a", "b", method="magic")
