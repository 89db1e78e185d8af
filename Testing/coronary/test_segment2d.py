"""2D coronary segmentation: Frangi + hysteresis, the shipped learned segmenter, user masks, dispatcher."""

from __future__ import annotations


from pathlib import Path

import numpy as np
import pytest

from angiorecon.coronary.segment2d import (FrangiParams, LearnedSegmenter, frangi_segment, normalise_image,
                                           segment_views, segmenter_weights_path)
from angiorecon.coronary.views import LoadedViews
from angiorecon.errors import BadInput
from angiorecon.metrics.volume import cldice, dice
from angiorecon.simulation.products import CoronaryConfig, simulate_coronary


@pytest.fixture(scope="module")
def sim_views() -> tuple[LoadedViews, np.ndarray]:
    """Two simulated views (seed not used in training) as load_views would give them, and their true masks."""
    cfg = CoronaryConfig(views=2, detector=(320, 320), pixel_spacing=(0.4, 0.45), vessel_spacing=0.4)
    case = simulate_coronary(config=cfg, seed=777)
    return LoadedViews(case.geometry, case.images, [0, 0], ["sim1", "sim2"]), case.masks_2d


def test_frangi_segments_simulated_views(sim_views):
    views, truth = sim_views
    sp = float(views.geometry.pixel_spacing[0, 1])
    prob, mask = frangi_segment(views.images[0], sp)
    np.testing.assert_array_equal(prob >= 0.5, mask)           # the 0.5 level is the final mask
    assert prob.min() >= 0 and prob.max() <= 1
    assert dice(mask, truth[0]) > 0.75
    assert cldice(mask[None], truth[0][None])["cldice"] > 0.8
    # a flat image has no vessels
    flat_prob, flat_mask = frangi_segment(np.zeros((64, 64), np.float32), sp)
    assert not flat_mask.any() and flat_prob.max() < 0.5


def test_segment_views_frangi_and_scale_in_mm(sim_views):
    views, truth = sim_views
    prob = segment_views(views, "frangi")
    assert prob.shape == views.images.shape and prob.dtype == np.float32
    assert np.mean([dice(prob[v] >= 0.5, truth[v]) for v in range(2)]) > 0.75
    # scales follow the pixel spacing: the same image declared at twice the spacing loses thin vessels
    coarse = FrangiParams(sigmas_mm=tuple(2 * s for s in FrangiParams().sigmas_mm))
    sp = float(views.geometry.pixel_spacing[0, 1])
    fine_dice = dice(frangi_segment(views.images[0], sp)[1], truth[0])
    assert dice(frangi_segment(views.images[0], sp, coarse)[1], truth[0]) < fine_dice


def test_normalise_image_ignores_offset_and_gain(sim_views):
    views, _ = sim_views
    a = normalise_image(views.images[0])
    b = normalise_image(3.0 * views.images[0] + 11.0)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert abs(float(np.median(a))) < 0.5


def test_learned_segmenter_shipped_and_accurate(sim_views):
    views, truth = sim_views
    path = segmenter_weights_path()
    assert path.is_file() and path.stat().st_size < 5 * 1024 ** 2
    assert path.with_suffix(".json").is_file()                  # model card beside the weights
    seg = LearnedSegmenter()
    assert 0.05 < seg.threshold < 0.95 and "command" in seg.meta
    prob = segment_views(views, "learned")
    scores = [dice(prob[v] >= 0.5, truth[v]) for v in range(2)]
    assert np.mean(scores) > 0.75, scores


def test_learned_segmenter_missing_weights(tmp_path):
    with pytest.raises(BadInput, match="weights not found"):
        LearnedSegmenter(tmp_path / "nothing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="not a readable coronary segmenter checkpoint"):
        LearnedSegmenter(tmp_path / "bad.pt")


def test_user_masks_checked(sim_views, tmp_path):
    from skimage import io

    views, truth = sim_views
    paths = []
    for v in range(2):
        p = tmp_path / f"mask_{v}.png"
        io.imsave(p, (truth[v] * 255).astype(np.uint8), check_contrast=False)
        paths.append(p)
    got = segment_views(views, "masks", paths)
    np.testing.assert_array_equal(got >= 0.5, truth)
    small = tmp_path / "small.png"
    io.imsave(small, np.full((10, 12), 255, np.uint8), check_contrast=False)
    with pytest.raises(BadInput, match=r"small\.png is 10x12 pixels but view 2 is 320x320"):
        segment_views(views, "masks", [paths[0], small])
    with pytest.raises(BadInput, match="one mask per view"):
        segment_views(views, "masks", paths[:1])
    with pytest.raises(BadInput, match="needs one mask file per view"):
        segment_views(views, "masks")
    empty = tmp_path / "empty.png"
    io.imsave(empty, np.zeros((320, 320), np.uint8), check_contrast=False)
    with pytest.raises(BadInput, match="empty"):
        segment_views(views, "masks", [paths[0], empty])
    with pytest.raises(BadInput, match="unknown 2D segmentation method"):
        segment_views(views, "otsu")


def test_training_helpers(tmp_path):
    from angiorecon.coronary.train_segmenter import _crop, best_threshold, real_views, sample_synthetic

    rng = np.random.default_rng(0)
    img = rng.normal(size=(300, 280)).astype(np.float32)
    msk = (rng.random((300, 280)) > 0.9).astype(np.float32)
    x, y = sample_synthetic(rng, [img], [msk], 128, (0.5, 0.6))
    assert x.shape == y.shape == (128, 128) and set(np.unique(y)) <= {0.0, 1.0}
    x, y = _crop(rng, img[:100, :90], msk[:100, :90], 128)       # smaller than the crop: padded
    assert x.shape == (128, 128)
    t, d = best_threshold([msk * 0.7], [msk])
    assert d == pytest.approx(1.0) and t <= 0.7
    testing = tmp_path / "Angios_40_testing"
    testing.mkdir()
    with pytest.raises(BadInput, match="evaluation split"):
        real_views(testing)


def test_train_writes_loadable_checkpoint_and_card(tmp_path, monkeypatch):
    """The training loop end to end on tiny stand-in views (the simulator is exercised elsewhere)."""
    import json

    import angiorecon.coronary.train_segmenter as ts

    def fake_views(n_cases: int, seed: int, backgrounds=(), ct_fraction=0.5):
        rng = np.random.default_rng(seed)
        imgs, msks = [], []
        for _ in range(2 * n_cases):
            m = np.zeros((96, 96), np.float32)
            m[:, int(rng.integers(20, 70)):][:, :4] = 1.0
            imgs.append((m * 0.3 + rng.normal(0, 0.01, m.shape)).astype(np.float32))
            msks.append(m)
        return imgs, msks, ["chest-ellipse", "ct"] * n_cases

    monkeypatch.setattr(ts, "synthetic_views", fake_views)
    out = tmp_path / "seg.pt"
    meta = ts.train(3, 0, out, cases=3, batch=2, crop=64)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 3 and card["seed"] == 0 and card["wall_time_s"] > 0
    # held-out synthetic views are scored per background
    assert set(card["validation"]["synthetic_dice_4_views_scale_0.75"]) == {"chest-ellipse", "ct"}
    assert card["threshold"] == meta["threshold"]
    seg = LearnedSegmenter(out)
    prob, mask = seg.segment(np.zeros((50, 70), np.float32))
    assert prob.shape == mask.shape == (50, 70)
    np.testing.assert_array_equal(prob >= 0.5, mask)
    tuned = ts.train(2, 1, tmp_path / "tuned.pt", cases=3, batch=2, crop=64, init=out)
    assert not Path(tuned["init_from"]["path"]).is_absolute()   # cards name no folder of this machine
    assert tuned["init_from"]["model_card"]["seed"] == 0


def test_synthetic_views_through_ct_backgrounds():
    """Every other case is simulated through the CT, and the CT's bulk shows in the log image."""
    from angiorecon.coronary.backgrounds import ct_backgrounds
    from angiorecon.coronary.train_segmenter import synthetic_views
    from angiorecon.geometry import VolumeGrid

    hu = np.full((60, 80, 80), 300.0, np.float32)          # a dense slab: bone-like everywhere
    grid = VolumeGrid.centered(hu.shape[::-1], 3.0)          # x, y, z
    images, masks, labels = synthetic_views(2, 0, [(hu, grid, "slab")], 0.5)
    assert labels == ["chest-ellipse"] * 2 + ["slab"] * 2
    assert len(images) == len(masks) == 4 and all(m.any() for m in masks)
    centre = np.s_[200:312, 200:312]
    assert min(np.median(x[centre]) for x in images[2:]) > max(np.median(x[centre]) for x in images[:2])
    with pytest.raises(BadInput, match="held-out"):
        ct_backgrounds(["pulmonary_cta"])


def test_training_cli_rejects_fractions_outside_0_1(capsys):
    from angiorecon.coronary.train_segmenter import main

    with pytest.raises(SystemExit):
        main(["--out", "x.pt", "--ct", "aorta_cta", "--ct-fraction", "1.5"])
    assert "--ct-fraction must be within 0–1, got 1.5" in capsys.readouterr().err


def test_training_cli_names_bad_inputs_before_simulating(tmp_path, capsys, monkeypatch):
    """A bad CT, real folder or init checkpoint is a one-line error, found before any simulation."""
    import angiorecon.coronary.train_segmenter as ts

    monkeypatch.setattr(ts, "synthetic_views", lambda *a, **k: pytest.fail("simulated before checking inputs"))
    out = tmp_path / "seg.pt"
    for args, message in ((["--ct", "nosuch"], "unknown sample 'nosuch'"),
                          (["--real-dir", str(tmp_path)], "no angiogram PNGs"),
                          (["--init", str(tmp_path / "none.pt")], "does not exist")):
        with pytest.raises(SystemExit) as exc:
            ts.main(["--out", str(out), *args])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("seg*"))
