"""NeCA / SDF-CAR fields on a small simulated two-view tree: losses fall, Dice beats the visual hull,
and every loss term passes finite gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coronary_cases import small_case

from angiorecon.coronary import fields
from angiorecon.coronary.hull import visual_hull
from angiorecon.coronary.problem import CoronaryProblem
from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.metrics.volume import dice
from angiorecon.simulation.products import CoronaryConfig


@pytest.fixture(scope="module")
def case():
    """Right coronary tree, 256² detector, 0.6 mm ROI grid: (problem, truth mask, hull Dice)."""
    torch.set_num_threads(2)
    c = small_case(seed=3, config=CoronaryConfig(detector=(256, 256), pixel_spacing=(0.5, 0.6), side="right"))
    truth = c.truth()
    hull_dice = dice(visual_hull(c.problem.geometry, c.problem.masks, c.problem.grid) >= 0.5, truth)
    return c.problem, truth, hull_dice


@pytest.mark.parametrize("method", ["neca", "sdfcar"])
def test_field_reduces_loss_and_beats_hull(case, method):
    problem, truth, hull_dice = case
    res = getattr(fields, f"reconstruct_{method}")(problem, iterations=40)
    assert res.occupancy.shape == problem.grid.shape
    assert 0 <= res.occupancy.min() and res.occupancy.max() <= 1
    assert res.info["loss_last"]["proj"] < 0.25 * res.info["loss_first"]["proj"]
    d = dice(res.mask(), truth)
    assert d > hull_dice + 0.01, (d, hull_dice)


def _tiny():
    """A 20³ grid at 1 mm and two orthogonal 32² views with a bar mask in each."""
    grid = VolumeGrid.centered((20, 20, 20), 1.0)
    g = ConeBeamGeometry.from_xa_angles([0.0, 90.0], [0.0, 0.0], 1000.0, 750.0, (1.0, 1.0), (32, 32))
    masks = np.zeros((2, 32, 32), dtype=np.float32)
    masks[:, 14:19, 6:26] = 1.0
    return grid, g, masks


def test_every_loss_term_has_finite_gradients():
    grid, geom, masks = _tiny()
    cand = np.ones(grid.shape, dtype=bool)
    vv, rr, cc = np.nonzero(np.ones_like(masks, dtype=bool))
    a = fields.system_matrix(geom, grid, cand, vv, rr, cc, torch.device("cpu"))
    chord, d_in, d_out, obj_pix = fields.tube_targets(geom, masks, grid.center)
    # bias 0: s ≈ 0 everywhere, so the hinge (s > 0.5 mm outside the hull) is active too
    net = fields.FieldNet(grid, fields.PRESETS["sdfcar"]["fast"], out_bias=0.0, sdf_init=True)
    pts = torch.as_tensor(grid.index_to_world(np.argwhere(cand)[:, ::-1] * 1.0), dtype=torch.float32)
    t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    terms = {
        "proj": lambda occ: fields.projection_loss(a, occ, t(chord[vv, rr, cc])),
        "geo": lambda occ: fields.silhouette_distance_loss(a, occ, t(1 / obj_pix[vv]), t(d_in[vv, rr, cc]),
                                                           t(d_out[vv, rr, cc])),
        "eik": lambda occ: fields.eikonal_loss(net, pts[:256], 0.5),
        "out": lambda occ: torch.relu(0.5 - net(pts[:256])).mean(),
    }
    for name, term in terms.items():
        net.zero_grad()
        occ = torch.sigmoid(-5.0 * net(pts))
        loss = term(occ)
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert torch.isfinite(loss), name
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, f"{name} passes no gradient"


def test_eikonal_is_zero_for_a_true_distance_and_positive_otherwise():
    pts = torch.rand(500, 3) * 20 + 5
    sphere = lambda p: torch.linalg.norm(p, dim=1) - 3.0  # noqa: E731
    doubled = lambda p: 2 * (torch.linalg.norm(p, dim=1) - 3.0)  # noqa: E731
    assert float(fields.eikonal_loss(sphere, pts, 0.25)) < 1e-4
    assert abs(float(fields.eikonal_loss(doubled, pts, 0.25)) - 1.0) < 1e-3


def test_tube_chord_matches_the_bar_width():
    grid, geom, masks = _tiny()
    chord, d_in, d_out, obj_pix = fields.tube_targets(geom, masks, grid.center)
    # a 5-px bar: radius 2.5 px, centre-row chord 5 px in object mm
    assert chord[0, 16, 16] == pytest.approx(5 * obj_pix[0], rel=0.05)
    assert chord[0, 14, 16] < chord[0, 16, 16]
    assert chord[0, 10, 16] == 0 and d_out[0, 10, 16] > 0 and d_in[0, 16, 16] > d_in[0, 14, 16]


def test_calibrate_puts_the_half_level_around_the_requested_volume():
    occ = np.linspace(0, 0.4, 1000, dtype=np.float32).reshape(10, 10, 10)
    out, level = fields.calibrate(occ, 100)
    assert int((out >= 0.5).sum()) in (100, 101)
    assert np.all(np.diff(out.ravel()) >= 0) and out.max() <= 1


def test_paper_preset_builds_the_published_network_and_steps():
    grid, geom, masks = _tiny()
    for method in ("neca", "sdfcar"):
        cfg = fields.PRESETS[method]["paper"]
        assert (cfg.hash.n_levels, cfg.hash.n_features, cfg.hidden, cfg.layers, cfg.iterations, cfg.lr) == \
            (16, 2, 256, 8, 5000, 1e-4)
    # one run (the two methods share the network code); 2 steps of the full-size network
    res = fields.reconstruct_sdfcar(CoronaryProblem(geom, masks, grid), preset="paper", iterations=2)
    assert res.info["preset"] == "paper" and res.occupancy.shape == grid.shape
    assert np.isfinite(res.info["loss_last"]["loss"])
