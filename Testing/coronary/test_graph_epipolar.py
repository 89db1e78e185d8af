"""Hull, epipolar and AutoCAR-style graph methods on a small simulated two-view tree."""

from __future__ import annotations

import numpy as np
import pytest

from angiorecon.coronary.epipolar import _triangulate, skeleton_segments
from angiorecon.coronary.graph import (PointTree, ViewMaps, connect_tree, explanation_search, piece_support,
                                       select_branches, set_cover_start, split_at_junctions, tubes_to_occupancy)
from angiorecon.coronary.hull import sample_views, visual_hull
from angiorecon.coronary.methods import DEFAULT_METHOD, METHODS, reconstruct
from angiorecon.coronary.scoring import score_occupancy
from angiorecon.errors import BadInput
from angiorecon.geometry import VolumeGrid
from angiorecon.metrics.volume import n_components
from coronary_cases import SmallCase
from coronary_cases import small_case as make_case


@pytest.fixture(scope="module")
def small_case() -> SmallCase:
    return make_case("right", seed=0)


def _score(case, result):
    v = case.views
    return score_occupancy(result.occupancy, result.grid, v.vessels.mask(), v.vessels.grid)


def test_sparse_hull_equals_dense_sampling(small_case):
    p = small_case.problem
    sub = VolumeGrid((40, 60, 50), p.grid.affine)          # a corner of the ROI, every voxel sampled
    dense = sample_views(p.geometry, p.masks, sub.voxel_centers().reshape(-1, 3)).min(axis=0).reshape(sub.shape)
    np.testing.assert_array_equal(visual_hull(p.geometry, p.masks, sub), dense)


def test_hull_ignores_a_tiny_background_probability(small_case):
    """Learned segmenters give every pixel a tiny probability; below the floor it is background."""
    p = small_case.problem
    sub = VolumeGrid((40, 60, 50), p.grid.affine)
    soft = np.maximum(p.masks, 1e-3).astype(np.float32)
    np.testing.assert_array_equal(visual_hull(p.geometry, soft, sub), visual_hull(p.geometry, p.masks, sub))


def test_registry_names_and_unknown_method(small_case):
    assert set(METHODS) == {"autocar", "sdfcar", "neca", "epipolar", "hull"}
    assert DEFAULT_METHOD in METHODS
    with pytest.raises(BadInput, match="unknown coronary method 'nope'"):
        reconstruct(small_case.problem, "nope")


def test_hull_contains_the_lumen(small_case):
    s = _score(small_case, reconstruct(small_case.problem, "hull"))
    assert s["tsens"] > 0.9                                 # a superset of the tree ...
    assert s["dice"] < 0.6                                  # ... with ghosts: why the other methods exist


def test_epipolar_reconstructs_the_tree(small_case):
    r = reconstruct(small_case.problem, "epipolar")
    s = _score(small_case, r)
    assert s["dice"] > 0.45, s
    assert r.tree is not None and r.tree.branches


def test_autocar_is_one_connected_tree_with_good_overlap(small_case):
    r = reconstruct(small_case.problem, "autocar")
    s = _score(small_case, r)
    assert s["dice"] > 0.6, s
    assert s["cldice"] > 0.65, s
    assert s["chamfer_mm"] < 2.5, s
    assert r.info["components"] == 1                        # the point graph
    assert n_components(r.mask()) == 1                      # its voxelised tubes
    roots = [b for b in r.tree.branches if b.parent is None]
    assert len(roots) == 1                                  # one tree, every other branch has a parent
    assert all(np.all(b.radii > 0) for b in r.tree.branches)
    assert r.info["selection"]["search_start"] in ("greedy", "set cover")


def test_autocar_passes_selection_options_and_refuses_missing_or_corrupt_refiner_weights(small_case, tmp_path):
    """The benchmark's peers: ghost-pruning options reach the search, ``record`` gets the candidates and
    the kept ones; named weights must exist and load."""
    record: dict = {}
    r = reconstruct(small_case.problem, "autocar", selection={"exact_start": False}, record=record)
    assert r.info["selection"]["search_start"] == "greedy"
    assert len(record["kept"]) == r.info["selection"]["kept"]
    assert set(record["kept"]) <= set(range(len(record["pieces"])))
    assert len(record["pieces"]) == r.info["pieces"]
    with pytest.raises(BadInput, match="nothere.pt"):
        reconstruct(small_case.problem, "autocar", refiner_weights=tmp_path / "nothere.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="corrupt.pt is not a coronary refiner checkpoint"):
        reconstruct(small_case.problem, "autocar", refiner_weights=corrupt)


def test_autocar_takes_a_third_view_and_leaves_less_depth_open():
    """A third view out of the first two's plane fixes the depth the two views leave open."""
    from dataclasses import replace

    from angiorecon.coronary.epipolar import depth_ambiguous_length
    from coronary_cases import small_config

    case = make_case("right", seed=0, config=replace(small_config("right"), views=3))
    assert case.problem.geometry.n_views == 3
    r = reconstruct(case.problem, "autocar")
    s = _score(case, r)
    assert s["dice"] > 0.7 and s["cldice"] > 0.8, s
    assert r.info["components"] == 1 and n_components(r.mask()) == 1
    two = case.problem.geometry.subset([0, 1])
    # the fitted tree's open-depth share: under every pair of the three views vs under views 1 and 2 alone
    assert depth_ambiguous_length(r.tree, case.problem.geometry) < 0.5 * depth_ambiguous_length(r.tree, two)


def test_connect_tree_bridges_pieces_and_drops_specks():
    a = np.stack([np.linspace(0, 20, 41), np.zeros(41), np.zeros(41)], 1)
    b = np.stack([np.full(21, 10.0), np.linspace(3, 13, 21), np.zeros(21)], 1)     # 3 mm gap to a
    speck = np.array([[50.0, 50, 50], [50.5, 50, 50]])
    t = connect_tree([a, b, speck], [np.full(41, 1.0), np.full(21, 0.5), np.full(2, 0.5)])
    assert t.n_components() == 1
    assert np.isin(t.parent, [-1]).sum() == 1
    assert np.linalg.norm(t.points - [50, 50, 50], axis=1).min() > 10     # the speck was not bridged
    cl = t.to_centerlines(0.5)
    assert sum(b.parent is None for b in cl.branches) == 1
    assert cl.total_length == pytest.approx(20 + 13, abs=1.0)


def test_tubes_voxelise_with_the_right_radius():
    pts = np.stack([np.linspace(-10, 10, 81), np.zeros(81), np.zeros(81)], 1)
    tree = PointTree(pts, np.full(81, 2.0), np.arange(-1, 80))
    grid = VolumeGrid.centered((64, 32, 32), 0.25)
    occ = tubes_to_occupancy(tree, grid)
    area = (occ[:, :, 32] >= 0.5).sum() * 0.25 ** 2          # cross-section at x = 0
    assert area == pytest.approx(np.pi * 4, rel=0.1)


def test_skeleton_segments_split_at_junctions():
    img = np.zeros((40, 40), bool)
    img[20, 5:35] = True
    img[5:20, 20] = True
    segs = skeleton_segments(img)
    assert len(segs) == 3
    assert sorted(len(s) for s in segs) == pytest.approx([14, 14, 15], abs=1)


def test_triangulation_of_intersecting_rays():
    x, gap = _triangulate(np.zeros(3), np.array([[1.0, 0, 0]]), np.array([5.0, -5, 0]),
                          np.array([[0.0, 1, 0]]))
    np.testing.assert_allclose(x[0], [5, 0, 0], atol=1e-9)
    assert gap[0] == pytest.approx(0)


def _line_masks(geometry, line: np.ndarray) -> np.ndarray:
    """Both views' masks of a straight 3D vessel: its projected segment drawn 3 px wide."""
    uv = geometry.project_points(line)
    masks = np.zeros((2,) + tuple(geometry.det_shape), dtype=np.float32)
    for v in range(2):
        for t in np.linspace(0, 1, 400):
            c, r = uv[v, 0] * (1 - t) + uv[v, -1] * t
            masks[v, int(round(r)) - 1:int(round(r)) + 2, int(round(c)) - 1:int(round(c)) + 2] = 1
    return masks


def test_candidates_are_cut_where_one_view_has_a_junction(small_case):
    """A 3D candidate is cut where its projection meets a 2D junction in *either* view (a match may
    switch vessel there), and only there."""
    g = small_case.problem.geometry
    line = np.stack([np.linspace(-15, 15, 121), np.linspace(-5, 5, 121), np.zeros(121)], 1)
    masks = _line_masks(g, line)
    c, r = np.rint(g.project_points(line)[1, 60]).astype(int)                   # a side branch at the middle, view 1 only
    masks[1, r + 1:r + 25, c - 1:c + 2] = 1
    views = ViewMaps.from_masks(masks)
    pieces, radii = split_at_junctions([line], [np.ones(len(line))], g, views)
    assert len(pieces) == 2 and [len(r) for r in radii] == [len(p) for p in pieces]
    cut = len(pieces[0]) - 1
    assert abs(cut - 60) <= 6                               # cut at the junction ...
    np.testing.assert_array_equal(pieces[1][0], pieces[0][-1])   # ... into pieces sharing the cut point
    assert len(pieces[0]) + len(pieces[1]) == len(line) + 1
    masks[1, r + 1:r + 25, c - 1:c + 2] = 0                 # no side branch: nothing to cut
    alone, _ = split_at_junctions([line], [np.ones(len(line))], g, ViewMaps.from_masks(masks))
    assert len(alone) == 1


def _line(a, b, n=21):
    return np.linspace(a, b, n)


def test_explanation_search_swaps_a_ghost_for_the_branches_it_shadows():
    """The greedy took a ghost that pairs vessel A in view 1 with vessel B in view 2: adding the true
    A and B explains every pixel, after which the ghost explains nothing and is dropped."""
    px = np.arange(20)
    cover = [[px[:10], px[:10]],                            # A
             [px[10:], px[10:]],                            # B
             [px[:10], px[10:]]]                            # ghost: A's pixels in view 1, B's in view 2
    points = [_line([0, 0, 0], [10, 0, 0]), _line([10, 0, 0], [20, 0, 0]), _line([0, 0, 0], [5, 10, 0])]
    cost = [6.0, 6.0, 6.0]
    kept, moves = explanation_search([2], [0, 1, 2], cover, [20, 20], cost, points)
    assert kept == [0, 1] and moves >= 2


def test_explanation_search_keeps_a_branch_hidden_in_one_view_and_the_tree_connected():
    px = np.arange(30)
    cover = [[px[:10], px[:10]],                            # trunk
             [px[10:20], px[:10]],                          # branch behind the trunk in view 2
             [px[20:24], px[20:24]]]                        # a far speck: a few pixels, a second component
    points = [_line([0, 0, 0], [10, 0, 0]), _line([10, 0, 0], [10, 10, 0]), _line([50, 50, 50], [52, 50, 50])]
    cost = [6.0, 6.0, 2.4]
    kept, _ = explanation_search([0], [0, 1, 2], cover, [30, 30], cost, points, component_px=25.0)
    assert kept == [0, 1]                                   # new in one view only, still worth its cost
    kept, _ = explanation_search([0], [0, 1, 2], cover, [30, 30], cost, points, component_px=0.0)
    assert kept == [0, 1, 2]                                # only the component penalty keeps the speck out


def test_explanation_search_leaves_a_minimum_that_one_piece_moves_cannot():
    """Two ghosts shadow three true pieces: every add, remove or one-for-one swap from the ghosts
    costs more, yet the true set explains the same pixels for less. The exact set-cover start finds it."""
    px = np.arange(30)
    cover = [[px[:15]], [px[15:]],                          # ghosts, 6 each
             [px[:10]], [px[10:20]], [px[20:]]]             # true pieces, 3 each
    points = [_line([0, 0, 0], [1, 0, 0])] * 5              # all touching: one component whatever is kept
    cost = [6.0, 6.0, 3.0, 3.0, 3.0]
    outcome: dict = {}
    stuck, _ = explanation_search([0, 1], list(range(5)), cover, [30], cost, points, exact_start=False,
                                  outcome=outcome)
    assert stuck == [0, 1] and outcome == {"search_start": "greedy", "search_energy": 12.0}
    kept, _ = explanation_search([0, 1], list(range(5)), cover, [30], cost, points, outcome=outcome)
    assert kept == [2, 3, 4] and outcome == {"search_start": "set cover", "search_energy": 9.0}
    from scipy.sparse import csr_matrix
    mat = csr_matrix(np.array([[p in c[0] for p in px] for c in cover], dtype=float))
    best = set_cover_start([mat], np.asarray(cost), np.ones(5, dtype=bool))
    np.testing.assert_array_equal(best, [False, False, True, True, True])
    assert set_cover_start([mat], np.asarray(cost), np.zeros(5, dtype=bool)) is None


def test_support_decides_between_pieces_that_explain_the_same_pixels(small_case):
    """Two candidates on the same vessel explain the same pixels; the learned occupancy's support picks one."""
    g = small_case.problem.geometry
    line = np.stack([np.linspace(-15, 15, 61), np.linspace(-5, 5, 61), np.zeros(61)], 1)
    views = ViewMaps.from_masks(_line_masks(g, line))
    kept, _ = select_branches([line, line.copy()], g, views, support=np.array([0.1, 0.9]))
    assert kept == [1]
    kept, _ = select_branches([line, line.copy()], g, views, support=np.array([0.9, 0.1]))
    assert kept == [0]
    grid = VolumeGrid.centered((20, 20, 20), 1.0)
    prior = np.zeros(grid.shape, dtype=np.float32)
    prior[:, :, :10] = 1.0                                  # x < 0 supported
    assert piece_support(prior, grid, _line([-8, 0, 0], [-3, 0, 0])) == pytest.approx(1.0)
    assert piece_support(prior, grid, _line([3, 0, 0], [8, 0, 0])) == pytest.approx(0.0)


def test_scoring_inside_the_field_of_view_ignores_vessels_a_view_cannot_see(small_case):
    """A reconstruction of exactly what a narrower detector sees is perfect inside its field of view."""
    from dataclasses import replace

    from angiorecon.coronary.scoring import seen_by_every_view

    v = small_case.views
    h, w = v.geometry.det_shape
    narrow = replace(v.geometry, det_shape=(h, w // 2))
    truth = v.vessels.mask() != 0
    ijk = np.argwhere(truth)
    seen = seen_by_every_view(narrow, v.vessels.grid.index_to_world(ijk[:, ::-1]))
    assert 0.05 < 1 - seen.mean() < 0.95                      # part of the tree leaves the narrow view
    visible = np.zeros_like(truth)
    visible[tuple(ijk[seen].T)] = True
    full = score_occupancy(visible.astype(np.float32), v.vessels.grid, truth, v.vessels.grid)
    inside = score_occupancy(visible.astype(np.float32), v.vessels.grid, truth, v.vessels.grid, seen_by=narrow)
    assert full["dice"] < 0.95 and full["chamfer_mm"] > 0.5
    assert inside["dice"] == pytest.approx(1.0) and inside["chamfer_mm"] == pytest.approx(0.0)


def test_depth_ambiguity_is_measured_against_the_epipolar_plane():
    from angiorecon.coronary.epipolar import depth_ambiguous_length, epipolar_plane_angle, epipolar_point_angle
    from angiorecon.geometry import ConeBeamGeometry
    from angiorecon.vessels.centerlines import CenterlineTree

    g = ConeBeamGeometry.from_xa_angles([0.0, 60.0], [0.0, 0.0], sid=1100.0, sod=780.0, det_shape=(64, 64),
                                        pixel_spacing=(0.5, 0.5))
    x0 = np.array([5.0, -3.0, 8.0])
    in_plane = (g.source[0] - x0) / np.linalg.norm(g.source[0] - x0) + (g.source[1] - x0) / np.linalg.norm(
        g.source[1] - x0)
    normal = np.cross(g.source[0] - x0, g.source[1] - x0)
    lin = np.linspace(0.0, 1.0, 21)[:, None]
    along = x0 + 20.0 * lin * in_plane / np.linalg.norm(in_plane)       # 20 mm in the epipolar plane
    across = x0 + 15.0 * lin * normal / np.linalg.norm(normal)          # 15 mm along its normal
    assert epipolar_plane_angle(along, g) == pytest.approx(np.zeros(20), abs=1e-6)
    assert epipolar_plane_angle(across[:2], g) == pytest.approx([90.0], abs=0.1)    # plane taken at the midpoint
    # per point (the markups' EpipolarAngle): same angles, one per point, ends included
    assert epipolar_point_angle(along, g) == pytest.approx(np.zeros(21), abs=1e-6)
    assert epipolar_point_angle(across[:1], g) == pytest.approx([0.0])               # one point: no tangent
    bent = np.concatenate([along, along[-1] + across[1:] - x0])                      # turns out of the plane
    a = epipolar_point_angle(bent, g)
    assert a.shape == (41,) and a[:20] == pytest.approx(np.zeros(20), abs=1e-6) and 30.0 < a[20] < 60.0
    assert a[21] > 89.0
    tree = CenterlineTree.from_curves([along, across], [None, None])
    assert depth_ambiguous_length(tree, g) == pytest.approx(20.0, abs=1e-6)
    assert depth_ambiguous_length(tree, g.subset([0])) == pytest.approx(35.0, abs=1e-6)   # one view: no depth at all


def test_further_view_closes_the_open_depth():
    """``plan_further_view``: C-arm angles out of the two views' plane, checked against the three-view geometry."""
    from angiorecon.coronary.epipolar import (MIN_SEPARATION_DEG, FurtherView, depth_ambiguous_length,
                                              epipolar_plane_angle, plan_further_view)
    from angiorecon.geometry import ConeBeamGeometry
    from angiorecon.vessels.centerlines import CenterlineTree

    def carm(primary, secondary):
        return ConeBeamGeometry.from_xa_angles(primary, secondary, sid=1100.0, sod=780.0, det_shape=(64, 64),
                                               pixel_spacing=(0.5, 0.5))

    g = carm([0.0, 60.0], [0.0, 0.0])
    x0 = np.array([5.0, -3.0, 8.0])
    in_plane = (g.source[0] - x0) / np.linalg.norm(g.source[0] - x0) + (g.source[1] - x0) / np.linalg.norm(
        g.source[1] - x0)
    normal = np.cross(g.source[0] - x0, g.source[1] - x0)
    lin = np.linspace(0.0, 1.0, 21)[:, None]
    along = x0 + 20.0 * lin * in_plane / np.linalg.norm(in_plane)       # 20 mm whose depth two views leave open
    across = x0 + 15.0 * lin * normal / np.linalg.norm(normal)
    tree = CenterlineTree.from_curves([along, across], [None, None])
    plan = plan_further_view([along, across], g)
    assert plan.open_mm_now == pytest.approx(20.0, abs=1e-6) and plan.open_mm == pytest.approx(0.0)
    three = carm([0.0, 60.0, plan.primary_deg], [0.0, 0.0, plan.secondary_deg])
    assert depth_ambiguous_length(tree, three) == pytest.approx(plan.open_mm)       # the same measure, three views
    d = -np.vstack([g.source, three.source[2:]])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    assert np.degrees(np.arccos(d[:2] @ d[2])).min() >= MIN_SEPARATION_DEG
    between = carm([0.0, 60.0, 30.0], [0.0, 0.0, 0.0])                 # a third view in the two views' plane
    assert depth_ambiguous_length(tree, between) > 15.0                 # ... leaves the depth open: not suggested
    assert 0.0 <= plan.foreshortening <= 1.0
    np.testing.assert_allclose(plan.source_mm, three.source[2], atol=1e-9)
    three_sources = np.vstack([g.source, plan.source_mm])              # the planes need only the sources
    np.testing.assert_allclose(epipolar_plane_angle(along, three_sources), epipolar_plane_angle(along, three))
    assert FurtherView(-30.0, 10.0, 0.0, 1.0, 0.5, (0.0, 0.0, 0.0)).label() == "RAO 30° CRA 10°"
    assert FurtherView(25.0, -5.0, 0.0, 1.0, 0.5, (0.0, 0.0, 0.0)).label() == "LAO 25° CAU 5°"
    plain = ConeBeamGeometry(g.source, g.det_center, g.det_u, g.det_v, g.det_shape)   # no C-arm frame: no angles
    with pytest.raises(BadInput, match="C-arm geometry"):
        plan_further_view([along], plain)
    with pytest.raises(BadInput, match="no centerline"):
        plan_further_view([along[:1]], g)
