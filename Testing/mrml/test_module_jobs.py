"""Job dictionaries the module panels send to the engine tasks: each equals what the engine task's own
``job_from_args`` builds from the equivalent command line."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import module_paths  # noqa: F401  (puts the module folders on sys.path)
from angiorecon.cli import build_parser
from CoronaryTwoViewLib.jobs import CORONARY_METHODS, coronary_job
from DSAReconstructionLib import jobs
from SyntheticDSALib.jobs import SIMULATE_DEFAULTS, ddsa_job, simulate_job


def _engine_job(task: str, argv: list[str], tmp_path) -> dict:
    """What ``angiorecon TASK ARGV --out DIR`` would run (the CLI's own parser and job_from_args)."""
    args = build_parser(only=task).parse_args([task, *map(str, argv), "--out", str(tmp_path / "out")])
    return importlib.import_module(f"angiorecon.pipelines.{task.replace('-', '_')}").job_from_args(args)


def test_view_list_parsing():
    assert jobs.parse_view_list("0, 4 8-10;4") == [0, 4, 8, 9, 10]
    for bad, message in (("3-1", "backwards"), ("a", "not a frame number"), (" , ", "empty")):
        with pytest.raises(ValueError, match=message):
            jobs.parse_view_list(bad)


def test_methods_are_the_engines():
    from angiorecon.pipelines.reconstruct import DEFAULT_METHOD, FORMATS, METHODS

    assert set(jobs.RECONSTRUCTION_METHODS) == set(METHODS)
    assert jobs.RECONSTRUCTION_METHODS[0] == DEFAULT_METHOD
    assert jobs.VOLUME_FORMATS == FORMATS


@pytest.mark.parametrize("kwargs, argv", [
    ({}, ["--views", "30", "--preset", "fast"]),
    ({"method": "vpal", "views": [8, 0, 4], "preset": "paper", "reference": "REF"},
     ["--method", "vpal", "--view-list", "0,4,8", "--preset", "paper", "--reference", "REF"]),
    ({"method": "fdk", "views": None, "preset": None, "skip": ["mesh", "renderings"], "volume_format": "nrrd",
      "seed": 3, "params": {"filter": "hann"}, "sid": 1100.0, "sod": 700.0, "voxel_size": 0.8},
     ["--method", "fdk", "--skip", "mesh,renderings", "--format", "nrrd", "--seed", "3", "--param", "filter=hann",
      "--sid", "1100", "--sod", "700", "--voxel-size", "0.8"]),
])
def test_reconstruct_job_equals_engine_cli(tmp_path, kwargs, argv):
    kwargs = {k: tmp_path / v if k == "reference" else v for k, v in kwargs.items()}
    argv = [tmp_path / a if a == "REF" else a for a in argv]
    job = jobs.reconstruct_job([tmp_path / "run"], **kwargs)
    assert job == _engine_job("reconstruct", [tmp_path / "run", *argv], tmp_path)


def test_reconstruct_job_rejects_bad_choices():
    with pytest.raises(ValueError, match="unknown method"):
        jobs.reconstruct_job(["x"], method="magic")
    with pytest.raises(ValueError, match="output to skip"):
        jobs.reconstruct_job(["x"], skip=["volume"])
    with pytest.raises(ValueError, match="at least one input"):
        jobs.reconstruct_job([])
    with pytest.raises(ValueError, match="view list is empty"):
        jobs.reconstruct_job(["x"], views=[])


def test_roles_to_load():
    roles = jobs.roles_to_load({"volume": True, "mesh": False, "centerlines": True})
    assert roles == ["volume", "time_to_peak", "centerlines"]


@pytest.mark.parametrize("kwargs, argv", [
    ({"product": "rotational", "ct": "CT", "vessel_masks": ["V"], "frames": 40, "arc_degrees": 180.0, "seed": 7},
     ["rotational", "--ct", "CT", "--vessels", "V", "--vessel-source", "real", "--frames", "40", "--arc", "180",
      "--seed", "7"]),
    ({"product": "rotational", "ct": "CT"}, ["rotational", "--ct", "CT", "--vessel-source", "synthetic"]),
    ({"product": "two-view", "views": 3, "detector": 256, "stenoses": 1},
     ["two-view", "--views", "3", "--detector", "256", "--stenoses", "1"]),
    ({"product": "pairs", "sample": "aorta_cta", "count": 4}, ["pairs", "--sample", "aorta_cta", "--count", "4"]),
])
def test_simulate_job_equals_engine_cli(tmp_path, kwargs, argv):
    """Paths: the engine keeps ``--ct``/``--vessels`` as typed, so absolute paths are given to both."""
    paths = {"CT": str(tmp_path / "ct.nrrd"), "V": str(tmp_path / "v.nrrd")}
    kwargs = {k: ([paths[x] for x in v] if k == "vessel_masks" else paths.get(v, v) if isinstance(v, str) else v)
              for k, v in kwargs.items()}
    assert simulate_job(**kwargs) == _engine_job("simulate", [paths.get(a, a) for a in argv], tmp_path)


def test_simulate_defaults_are_the_engines(tmp_path):
    assert SIMULATE_DEFAULTS == _engine_job("simulate", ["rotational"], tmp_path)
    with pytest.raises(ValueError, match="unknown product"):
        simulate_job("movie", "ct.nrrd")
    with pytest.raises(ValueError, match="either a CT file or a shipped sample"):
        simulate_job("pairs", "ct.nrrd", sample="aorta_cta")
    with pytest.raises(ValueError, match="need the CT"):
        simulate_job("rotational", vessel_masks=["v.nrrd"])
    with pytest.raises(ValueError, match="unknown simulate options"):
        simulate_job("rotational", colour="red")


def test_ddsa_job_equals_engine_cli(tmp_path):
    assert ddsa_job([tmp_path / "f.nrrd"]) == _engine_job("ddsa", [tmp_path / "f.nrrd"], tmp_path)
    assert ddsa_job([tmp_path / "f.nrrd"], model=tmp_path / "m.pt", tile=128, overlap=16, batch=2) == _engine_job(
        "ddsa", [tmp_path / "f.nrrd", "--model", tmp_path / "m.pt", "--tile", "128", "--overlap", "16",
                 "--batch", "2"], tmp_path)


def test_coronary_methods_are_the_engines():
    from angiorecon.coronary.methods import METHODS

    assert set(CORONARY_METHODS) == {"default", *METHODS}


@pytest.mark.parametrize("kwargs, argv", [
    ({}, []),
    ({"second_frame": 12, "method": "hull"}, ["--frames", "0", "12", "--method", "hull"]),
    ({"frame_selection": "cardiac-phase", "segmentation": "frangi", "device": "cpu"},
     ["--match-phase", "--segmentation", "frangi", "--device", "cpu"]),
    ({"segmentation": "masks", "masks": ["M1", "M2"], "sidecars": ["J1", "J2"], "voxel_mm": 0.4, "reference": "REF"},
     ["--masks", "M1", "M2", "--sidecar", "J1", "J2", "--voxel", "0.4", "--reference", "REF"]),
    ({"refine_pose": True, "method": "epipolar"}, ["--refine-pose", "--method", "epipolar"]),
    ({"intensity": False}, ["--no-intensity"]),
    ({"third_run": "C", "second_frame": 12, "third_frame": 3}, ["C", "--frames", "0", "12", "3"]),
    ({"third_run": "C", "segmentation": "masks", "masks": ["M1", "M2", "M3"]}, ["C", "--masks", "M1", "M2", "M3"]),
    ({"third_run": "", "third_frame": 5}, []),                 # an empty third path (the GUI's unset field): two views
    ({"third_run": Path(""), "third_frame": 5}, []),           # ctkPathLineEdit's empty value is Path(".")
])
def test_coronary_job_equals_engine_cli(tmp_path, kwargs, argv):
    """Paths: the engine keeps them as typed, so absolute paths are given to both."""
    def path(x):
        return str(tmp_path / x) if x in ("C", "M1", "M2", "M3", "J1", "J2", "REF") else x

    kwargs = {k: [path(x) for x in v] if isinstance(v, list) else path(v) if isinstance(v, str) else v
              for k, v in kwargs.items()}
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    assert coronary_job(a, b, **kwargs) == _engine_job("coronary", [a, b, *map(path, argv)], tmp_path)


def test_coronary_job_rejects_bad_choices(tmp_path):
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    with pytest.raises(ValueError, match="unknown method"):
        coronary_job(a, b, method="magic")
    with pytest.raises(ValueError, match="one mask per view"):
        coronary_job(a, b, segmentation="masks")
    with pytest.raises(ValueError, match=r"one mask per view \(3\), got 2"):
        coronary_job(a, b, third_run=tmp_path / "c.dcm", segmentation="masks", masks=["m1", "m2"])
    with pytest.raises(ValueError, match=r"one geometry sidecar per view \(3\)"):
        coronary_job(a, b, third_run=tmp_path / "c.dcm", sidecars=["j1", "j2"])
    with pytest.raises(ValueError, match="frame indices"):
        coronary_job(a, b, third_run=tmp_path / "c.dcm", third_frame=-1)
