"""The ``coronary`` task end to end on a simulated two-view case, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from angiorecon.simulation.products import simulate_coronary
from conftest import json_events, run_engine
from coronary_cases import small_config, write_case


@pytest.fixture(scope="module")
def sim_folder(tmp_path_factory) -> Path:
    return write_case(simulate_coronary(config=small_config("left"), seed=2), tmp_path_factory.mktemp("two_view"))


def test_task_writes_every_role(sim_folder, tmp_path):
    out = tmp_path / "out"
    r = run_engine("coronary", sim_folder / "dicom/view_1.dcm", sim_folder / "dicom/view_2.dcm",
                   "--masks", sim_folder / "truth/masks_2d.nii.gz", "--voxel", "0.6", "--reference", sim_folder,
                   "--refine-pose", "--device", "cpu", "--events", "json", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json_events(r.stdout)
    assert ev[-1]["event"] == "result"
    manifest = json.loads((out / "manifest.json").read_text())
    roles = {o["role"] for o in manifest["outputs"]}
    assert {"volume", "vessel_mask", "mesh", "centerlines", "overlays", "metrics"} <= roles
    for o in manifest["outputs"]:
        assert (out / o["path"]).exists(), o
    assert (out / "overlays/view_1.png").is_file() and (out / "overlays/view_2.png").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["reprojection_dice"]) == 2 and min(m["reprojection_dice"]) > 0.6
    # a view whose vessels run off its detector is reported and warned about
    warned = [e["message"] for e in ev if e["event"] == "log" and e.get("level") == "warning"
              and "detector edge" in e["message"]]
    assert len(m["vessel_pixels_at_edge"]) == 2
    assert len(warned) == sum(n >= 10 for n in m["vessel_pixels_at_edge"])
    assert warned, "this small case's vessels touch both detectors' borders"
    lines = m["centerlines"]
    assert 0.0 <= lines["depth_ambiguous_mm"] <= lines["total_length_mm"] and lines["depth_ambiguous_deg"] == 10.0
    open_depth = [e["message"] for e in ev if e["event"] == "log" and "epipolar planes" in e["message"]]
    assert bool(open_depth) == (lines["depth_ambiguous_mm"] > 0)
    assert all("a further view" in msg for msg in open_depth)        # two views: say what would fix it
    assert open_depth, "this case has centerline in the views' epipolar planes"
    further = lines["further_view"]                                   # ... and at which C-arm angles
    assert further["label"] in open_depth[0] and further["open_mm_now"] == pytest.approx(lines["depth_ambiguous_mm"])
    assert 0.0 <= further["open_mm"] < further["open_mm_now"]
    ref = m["reference"]
    assert ref["components"] == 1
    assert ref["dice"] > 0.35 and ref["cldice"] > 0.4      # plumbing; method bounds: test_graph_epipolar
    # the DICOM geometry is exact here: the pose refinement runs, is recorded and moves little
    pose = m["pose_correction"]["views"]["2"]
    assert pose["rotation_deg"] < 2.5 and np.linalg.norm(pose["translation_mm"]) < 2.0, pose
    assert manifest["pose_correction"] == m["pose_correction"]
    # the ghost pruning weighed the images' line integrals (one fitted scale per view)
    scale = m["info"]["selection"]["intensity_scale"]
    assert len(scale) == 2 and min(scale) > 0
    curves = json.loads((out / "centerlines.mrk.json").read_text())["markups"]
    assert curves
    angles = []
    for c in curves:
        meas = {mm["name"]: mm for mm in c["measurements"]}
        assert len(meas["Radius"]["controlPointValues"]) == len(c["controlPoints"])
        assert meas["EpipolarAngle"]["units"] == "deg"
        assert len(meas["EpipolarAngle"]["controlPointValues"]) == len(c["controlPoints"])
        angles += meas["EpipolarAngle"]["controlPointValues"]
    assert 0.0 <= min(angles) and max(angles) <= 90.0 and max(angles) > 10.0
    from angiorecon.formats.mesh import read_polylines

    _lines, point_arrays, _cells = read_polylines(out / "centerlines.vtp")
    np.testing.assert_allclose(np.concatenate(point_arrays["EpipolarAngle"]), angles, atol=1e-4)


def test_job_keys_match_the_contract(sim_folder, tmp_path):
    from angiorecon.cli import build_parser
    from angiorecon.pipelines.coronary import job_from_args

    args = build_parser(only="coronary").parse_args(
        ["coronary", str(sim_folder / "dicom/view_1.dcm"), str(sim_folder / "dicom/view_2.dcm"),
         "--masks", "a.png", "b.png", "--voxel", "0.7", "--refine-pose", "--no-intensity", "--out", str(tmp_path)])
    job = job_from_args(args)
    assert job["refine_pose"] is True and job["intensity"] is False
    assert job["views"] == [{"path": str(sim_folder / "dicom/view_1.dcm"), "frame": 0},
                            {"path": str(sim_folder / "dicom/view_2.dcm"), "frame": 0}]
    assert job["frame_selection"] == "index" and job["segmentation"] == "masks"
    assert job["masks"] == ["a.png", "b.png"] and job["voxel_mm"] == 0.7 and job["method"] == "default"


@pytest.mark.parametrize("case, expect", [
    ("missing_view", "does not exist"),
    ("wrong_mask_stack", "but the views are"),
    ("one_view", "at least two views, got 1"),
    ("bad_reference", "reference"),
])
def test_bad_inputs_exit_2_with_a_specific_message(sim_folder, tmp_path, case, expect):
    v1, v2 = sim_folder / "dicom/view_1.dcm", sim_folder / "dicom/view_2.dcm"
    masks = sim_folder / "truth/masks_2d.nii.gz"
    if case == "missing_view":
        args = [v1, tmp_path / "nope.dcm", "--masks", masks]
    elif case == "wrong_mask_stack":
        from angiorecon.formats.volume import write_stack

        bad = tmp_path / "bad.nii.gz"
        write_stack(bad, np.ones((2, 10, 10), np.uint8), (1.0, 1.0))
        args = [v1, v2, "--masks", bad]
    elif case == "one_view":
        args = [v1, "--masks", masks]
    else:
        bad_ref = tmp_path / "ref.txt"
        bad_ref.write_text("x")
        args = [v1, v2, "--masks", masks, "--method", "hull", "--reference", bad_ref]
    r = run_engine("coronary", *args, "--events", "json", "--out", tmp_path / "out")
    assert r.returncode == 2, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    err = [e for e in json_events(r.stdout) if e["event"] == "error"]
    assert err and err[-1]["kind"] == "bad-input" and expect in err[-1]["message"], err


@pytest.mark.parametrize("key", ["refine_pose", "intensity"])
def test_switches_must_be_booleans(sim_folder, key):
    from angiorecon.errors import BadInput
    from angiorecon.pipelines.coronary import _validate

    views = [{"path": str(sim_folder / f"dicom/view_{v}.dcm"), "frame": 0} for v in (1, 2)]
    with pytest.raises(BadInput, match=f"{key} must be true or false"):
        _validate({"views": views, key: "yes"})


def test_overlay_marks_depth_ambiguous_points_on_the_detector_only(tmp_path):
    """Magenta marks where the views leave the depth open; points off the detector change nothing."""
    import matplotlib.image as mpimg

    from angiorecon.pipelines.coronary import _overlay

    image = np.zeros((64, 64), np.float32)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 30:34] = True
    on = np.array([[31.0, y] for y in range(22, 42)])
    off = np.array([[-300.0, 10.0], [500.0, 900.0]])

    def draw(name: str, uv: np.ndarray) -> np.ndarray:
        _overlay(tmp_path / name, image, mask, mask, "t", uv)
        return mpimg.imread(tmp_path / name)[..., :3]

    def magenta(px: np.ndarray) -> int:
        return int(((px[..., 0] > 0.8) & (px[..., 1] < 0.3) & (px[..., 2] > 0.8)).sum())

    plain, marked = draw("plain.png", np.zeros((0, 2))), draw("marked.png", on)
    assert magenta(plain) == 0 and magenta(marked) > 20
    np.testing.assert_array_equal(draw("with_off.png", np.concatenate([on, off])), marked)
