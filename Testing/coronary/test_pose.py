"""Pose refinement of the second view: a simulated case whose second view's DICOM geometry is off by 3°
and 3 mm (in the directions two views can tell) gets most of it back, and a better reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from angiorecon.coronary.epipolar import plan_further_view
from angiorecon.coronary.hull import roi_grid
from angiorecon.coronary.methods import reconstruct
from angiorecon.coronary.pose import move_view, observable_axes, refine_pose
from angiorecon.coronary.problem import CoronaryProblem
from angiorecon.coronary.scoring import score_occupancy
from angiorecon.errors import BadInput
from angiorecon.simulation.trees import VesselTree
from coronary_cases import SmallCase, small_case


@pytest.fixture(scope="module")
def case() -> SmallCase:
    return small_case("right", seed=0)


@pytest.fixture(scope="module")
def wrong(case: SmallCase):
    """Second view rolled and tilted by 3° in all (about the region's centre) and shifted 3 mm sideways."""
    g, centre = case.problem.geometry, case.problem.grid.center
    d, n, m = observable_axes(g, 1)
    return move_view(g, 1, np.deg2rad(3.0) * (d + m) / np.sqrt(2), 3.0 * n, centre)


@pytest.fixture(scope="module")
def corrected(case: SmallCase, wrong):
    return refine_pose(wrong, case.problem.masks, case.problem.grid.center)


def _error_px(case: SmallCase, geometry) -> float:
    """RMS distance (px) in view 2 between where the true tree projects with ``geometry`` and truly."""
    nodes = case.views.tree.nodes
    diff = geometry.project_points(nodes)[1] - case.problem.geometry.project_points(nodes)[1]
    return float(np.sqrt(np.mean(np.sum(diff ** 2, axis=1))))


def test_refine_pose_recovers_most_of_a_3_degree_3_mm_error(case, wrong, corrected):
    corr = corrected
    before, after = _error_px(case, wrong), _error_px(case, corr.apply(wrong))
    assert before > 7.0                                     # the perturbation matters
    assert after < before / 3, (before, after, corr.info)
    info = corr.info["2"]
    assert info["profile_mismatch_after"] < info["profile_mismatch_before"]
    s = corr.summary()["views"]["2"]
    assert 1.0 < s["rotation_deg"] < 5.0 and len(s["translation_mm"]) == 3
    assert 0 not in corr.rotations                          # the reference view stays put


def test_refined_pose_reconstructs_better(case, wrong, corrected):
    torch.set_num_threads(2)
    masks = case.problem.masks
    dice = []
    for g in (wrong, corrected.apply(wrong)):
        r = reconstruct(CoronaryProblem(g, masks, roi_grid(g, masks, spacing=0.8)), "autocar")
        dice.append(score_occupancy(r.occupancy, r.grid, case.views.vessels.mask(), case.views.vessels.grid)["dice"])
    assert dice[1] > dice[0] + 0.15, dice


def test_exact_geometry_moves_little(case):
    corr = refine_pose(case.problem.geometry, case.problem.masks, case.problem.grid.center)
    assert _error_px(case, corr.apply(case.problem.geometry)) < 2.0, corr.info


def test_moves_only_the_secondary_view_rigidly(case):
    g = case.problem.geometry
    m = move_view(g, 1, np.deg2rad([1.0, -2.0, 0.5]), np.array([1.0, 2.0, 3.0]), case.problem.grid.center)
    np.testing.assert_array_equal(m.source[0], g.source[0])
    np.testing.assert_allclose(m.sid, g.sid)
    np.testing.assert_allclose(m.pixel_spacing, g.pixel_spacing)
    axes = observable_axes(g, 1)
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)


def test_bad_inputs(case):
    g = case.problem.geometry
    with pytest.raises(BadInput, match="at least two views"):
        refine_pose(g.subset([0]), case.problem.masks[:1], case.problem.grid.center)
    with pytest.raises(BadInput, match="first view's mask has no vessel"):
        refine_pose(g, np.zeros_like(case.problem.masks), case.problem.grid.center)


def _benchmark():
    """benchmarks/coronary_quality.py as a module (it is a script, not part of the package), loaded once
    and registered in ``sys.modules`` as an import would (its dataclass needs that)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "coronary_quality" not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "benchmarks" / "coronary_quality.py"
        spec = importlib.util.spec_from_file_location("coronary_quality", path)
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench
        try:
            spec.loader.exec_module(bench)
        except BaseException:
            del sys.modules[spec.name]
            raise
    return sys.modules["coronary_quality"]


def test_benchmark_pose_error_option(case):
    bench = _benchmark()
    assert bench.pose_error("3,2.5") == (3.0, 2.5)
    with pytest.raises(Exception, match="DEG,MM"):
        bench.pose_error("3")
    g, centre = case.problem.geometry, case.problem.grid.center
    m = bench.perturb_second_view(g, 3.0, 2.0, centre, np.random.default_rng(0))
    np.testing.assert_array_equal(m.source[0], g.source[0])
    # the source moves by the 3° arc about the region's centre, give or take the 2 mm shift
    arc = np.linalg.norm(g.source[1] - centre) * np.deg2rad(3.0)
    assert abs(np.linalg.norm(m.source[1] - g.source[1]) - arc) <= 2.0 + 1e-6


def test_benchmark_peer_option():
    """``--peer`` parses LABEL:KEY=VALUE into select_branches options of their defaults' types, and
    names the accepted keys when one is wrong."""
    import argparse

    bench = _benchmark()
    assert bench.peer_spec("ab:exact_start=false,support_cost=2,min_new_px=5") == (
        "ab", {"exact_start": False, "support_cost": 2.0, "min_new_px": 5})
    with pytest.raises(argparse.ArgumentTypeError, match="support_cost"):
        bench.peer_spec("ab:suport_cost=2")
    with pytest.raises(argparse.ArgumentTypeError, match="min_new_px expects an integer"):
        bench.peer_spec("ab:min_new_px=4.5")
    with pytest.raises(argparse.ArgumentTypeError, match="LABEL:KEY=VALUE"):
        bench.peer_spec("support_cost=2")
    assert "line_integral" not in bench.PEER_OPTIONS and "support" not in bench.PEER_OPTIONS


@pytest.mark.parametrize("content, message", [(None, "no such file"),
                                              (b"not a checkpoint", "is not a coronary refiner checkpoint")])
def test_benchmark_refiner_peer_is_checked_before_any_case(tmp_path, content, message, capsys, monkeypatch):
    """A missing or corrupt ``--refiner-peer`` is one argparse error up front, not a FAILED row per case."""
    bench = _benchmark()
    weights = tmp_path / "refiner.pt"
    if content is not None:
        weights.write_bytes(content)
    monkeypatch.setattr(bench, "simulate_coronary", lambda *a, **k: pytest.fail("simulated before the check"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--methods", "autocar", "--cases", "1", "--refiner-peer", str(weights)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and str(weights) in err


def test_benchmark_truth_coverage_tells_candidate_losses_from_pruning_losses(case):
    """``--diagnose``: the true centerline's share by fate, from pieces that are the true branches."""
    bench = _benchmark()
    tree, g, masks = case.views.tree, case.problem.geometry, case.problem.masks
    branches = [tree.nodes[c] for c in tree.branch_polylines() if len(c) >= 2]
    everything = list(range(len(branches)))

    def fates(pieces, kept, m=masks):
        f = bench.truth_coverage(tree, g, m, pieces, kept)
        assert set(f.share) == set(f.open_depth) == set(bench.FATES) and abs(sum(f.share.values()) - 1) < 1e-9
        return f.share

    assert fates(branches, everything)["kept"] > 0.99
    none_kept = fates(branches, [])                         # every candidate there, none kept
    assert none_kept["kept"] == 0 and none_kept["no candidate"] == 0 and none_kept["not kept"] > 0.95
    no_candidates = fates([], [])
    assert no_candidates["no candidate"] == none_kept["not kept"]         # the same samples, another fate
    blind = masks.copy()
    blind[1] = 0
    unseen = fates(branches, [], blind)         # a blank view: all lost to the masks, unless off its detector
    assert unseen["outside mask"] > 0.95 and abs(unseen["outside mask"] + unseen["outside view"] - 1) < 1e-9
    half = fates(branches, everything[: len(branches) // 2])
    assert 0.05 < half["kept"] < 0.95 and half["kept"] + half["not kept"] > 0.95


def test_benchmark_truth_coverage_says_where_the_views_leave_the_depth_open(case):
    """``--diagnose``'s second line: a true branch in the views' epipolar plane is all open depth,
    one across that plane none, whichever fate each has."""
    bench = _benchmark()
    g = case.problem.geometry
    at = case.views.tree.nodes.mean(axis=0)                 # inside both fields of view
    src = np.asarray(g.source, dtype=np.float64)
    in_plane = (src[0] - at) / np.linalg.norm(src[0] - at) + (src[1] - at) / np.linalg.norm(src[1] - at)
    across = np.cross(src[0] - at, src[1] - at)
    in_plane, across = in_plane / np.linalg.norm(in_plane), across / np.linalg.norm(across)
    nodes = np.array([at + k * in_plane for k in (0, 4, 8)] + [at + k * across for k in (3, 7, 11)])
    # two separate branches (3 mm apart at the closest), so no sample of one is explained by the other
    tree = VesselTree(nodes, np.full(6, 1.0), [-1, 0, 1, -1, 3, 4], np.zeros(6), [0, 0, 0, 1, 1, 1], [-1, -1])
    everywhere = np.ones_like(case.problem.masks)
    f = bench.truth_coverage(tree, g, everywhere, [nodes[:3]], [0])       # the in-plane branch kept, no other piece
    assert f.share["kept"] == pytest.approx(0.5, abs=0.05) and f.share["no candidate"] == pytest.approx(0.5, abs=0.05)
    assert f.open_depth["kept"] == 1.0 and f.open_depth["no candidate"] == 0.0
    assert np.isnan(f.open_depth["not kept"])                              # a fate no sample has
    f = bench.truth_coverage(tree, g, everywhere, [nodes[3:], nodes[:3]], [0])          # now the reverse
    assert f.open_depth["kept"] == 0.0 and f.open_depth["not kept"] == 1.0
    # --further-view: the in-plane branch is the open length, which the suggested further view closes
    assert bench.truth_open_mm(tree, g.source) == pytest.approx(8.0)
    plan = plan_further_view([nodes[:3], nodes[3:]], g)
    assert bench.truth_open_mm(tree, np.vstack([g.source, plan.source_mm])) == pytest.approx(0.0)
