"""Learned hull refinement: shipped weights load, tiles cover the hull, and a held-out simulated case
(seed never used in training) gets a better Dice than its visual hull."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from coronary_cases import small_case

from angiorecon.coronary import refine
from angiorecon.coronary.hull import visual_hull
from angiorecon.coronary.train_refiner import perturb_masks, refiner_loss
from angiorecon.metrics.volume import dice
from angiorecon.simulation.products import CoronaryConfig

#: the held-out CT as a plain file path, as a user could pass it
PULMONARY_CT_FILE = Path(refine.__file__).parents[1] / "data" / "pulmonary_cta" / "ct.nii.gz"


def test_refine_hull_beats_the_hull_on_a_held_out_case():
    torch.set_num_threads(2)
    # training used seeds 2000–2035 (model card); 7 is held out
    c = small_case(seed=7, config=CoronaryConfig(detector=(256, 256), pixel_spacing=(0.5, 0.6), side="left"))
    grid, truth = c.problem.grid, c.truth()
    hull = visual_hull(c.problem.geometry, c.problem.masks, grid)
    occ, cen = refine.refine_hull(c.problem, hull)
    assert occ.shape == cen.shape == grid.shape
    assert 0 <= occ.min() and occ.max() <= 1 and 0 <= cen.min() and cen.max() <= 1
    d_hull, d_ref = dice(hull >= 0.5, truth), dice(occ >= 0.5, truth)
    assert d_ref > d_hull + 0.03, (d_ref, d_hull)
    # centerness peaks inside the lumen
    assert cen[truth].mean() > 1.2 * cen[(hull >= 0.5) & ~truth].mean()


def test_missing_weights_raise_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="coronary refiner weights not found"):
        refine.load_refiner(tmp_path / "nope.pt")


class _Constant(torch.nn.Module):
    depth = 2

    def forward(self, x):
        return torch.full((x.shape[0], 2) + tuple(x.shape[2:]), 10.0)


def test_tiles_cover_every_candidate_including_the_borders():
    cand = np.zeros((50, 70, 45), dtype=bool)
    cand[0:3, :, 0] = True
    cand[20:50, 60:70, 40:45] = True
    cand[25, 35, 20] = True
    feats = np.zeros((refine.N_FEATURES,) + cand.shape, dtype=np.float32)
    feats[0][cand] = 1.0
    occ, cen = refine.predict_tiles(_Constant(), feats, cand, tile=32, overlap=4)
    assert np.all(occ[cand] > 0.99) and np.all(occ[~cand] == 0) and np.all(cen[cand] > 0.99)


def test_refiner_net_shapes_and_loss():
    net = refine.RefinerNet()
    x = torch.rand(1, refine.N_FEATURES, 16, 16, 16)
    y = torch.zeros(1, 2, 16, 16, 16)
    out = net(x)
    assert out.shape == (1, 2, 16, 16, 16)
    loss = refiner_loss(out, y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_perturbed_masks_stay_close_to_the_input():
    rng = np.random.default_rng(0)
    m = np.zeros((2, 64, 64), dtype=bool)
    m[:, 20:26, 5:60] = True
    p = perturb_masks(m, rng)
    assert p.shape == m.shape
    assert dice(p >= 0.5, m) > 0.6


def test_training_writes_weights_and_a_card_with_segmenter_cases(tmp_path, monkeypatch):
    from angiorecon.coronary.train_refiner import train

    out = tmp_path / "r.pt"
    monkeypatch.setattr("sys.argv", ["/somewhere/train_refiner.py", "--out", str(out)])
    meta = train(2, 2, 3, out, patch=16, val_seeds=(), segmenter_fraction=0.5, threads=2, log=lambda m: None)
    assert meta["steps_done"] == 2 and meta["case_seeds"] == [4000, 4001] and meta["segmenter_case_seeds"] == [4001]
    net, saved = refine.load_refiner(out)
    assert saved["segmenter_fraction"] == 0.5 and isinstance(net, refine.RefinerNet)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["segmenter_fraction"] == 0.5 and "learned segmenter" in card["training_data"]
    assert card["command"].endswith("r.pt") and " /" not in card["command"]   # no absolute path of this machine


def test_training_continues_from_a_checkpoint_and_nests_its_card(tmp_path):
    """``init`` fine-tunes: the parent's architecture and weights are the start, its card is kept."""
    from angiorecon.coronary.train_refiner import train

    parent = tmp_path / "parent.pt"
    train(1, 1, 3, parent, patch=16, val_seeds=(), base=4, depth=1, log=lambda m: None)
    parent_net, _ = refine.load_refiner(parent)
    child = tmp_path / "child.pt"
    meta = train(1, 0, 4, child, patch=16, val_seeds=(), init=parent, log=lambda m: None)   # 0 steps: a copy
    net, saved = refine.load_refiner(child)
    assert net.config == parent_net.config and (net.config["base"], net.config["depth"]) == (4, 1)
    for a, b in zip(net.state_dict().values(), parent_net.state_dict().values()):
        assert torch.equal(a, b)
    assert meta["init_from"]["model_card"]["case_seeds"] == [4000]
    assert meta["total_wall_time_s_including_init"] >= meta["init_from"]["model_card"]["wall_time_s"]
    assert json.loads(child.with_suffix(".json").read_text())["init_from"]["path"].endswith("parent.pt")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a checkpoint", "is not a coronary refiner checkpoint"),
    ({"config": {"base": 4, "depth": 1}, "state_dict": {}}, "is not a coronary refiner checkpoint"),  # no weights
])
def test_training_cli_names_a_bad_init_checkpoint_before_any_work(tmp_path, content, message, capsys, monkeypatch):
    import angiorecon.coronary.train_refiner as tr

    init = tmp_path / "init.pt"
    if isinstance(content, bytes):
        init.write_bytes(content)
    elif content is not None:
        torch.save(content, init)
    monkeypatch.setattr(tr, "make_case", lambda *a, **k: pytest.fail("simulated before checking --init"))
    with pytest.raises(SystemExit) as e:
        tr.main(["--init", str(init), "--out", str(tmp_path / "r.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1] and "train_refiner: error" in err[-1]
    assert not (tmp_path / "r.pt").exists()


def test_training_puts_a_share_of_the_segmenter_cases_through_a_ct(tmp_path, monkeypatch):
    """With a CT, every other segmenter case is simulated through it; the card names those cases."""
    import angiorecon.coronary.train_refiner as tr
    from angiorecon.geometry import VolumeGrid

    hu = np.full((60, 80, 80), 300.0, np.float32)
    slab = (hu, VolumeGrid.centered(hu.shape[::-1], 3.0), "slab")
    monkeypatch.setattr(tr, "ct_backgrounds", lambda specs: [slab] if specs else [])
    lines: list[str] = []
    meta = tr.train(2, 1, 3, tmp_path / "r.pt", patch=16, val_seeds=(), segmenter_fraction=1.0, cts=["slab"],
                    ct_fraction=0.5, log=lines.append)
    assert meta["segmenter_case_seeds"] == [4000, 4001]
    assert meta["ct_backgrounds"] == {"cts": ["slab"], "fraction_of_segmenter_cases": 0.5, "case_seeds": {4001: "slab"}}
    assert "ellipse" in lines[0] and "slab" in lines[1]
    card = json.loads((tmp_path / "r.json").read_text())
    assert card["ct_backgrounds"]["case_seeds"] == {"4001": "slab"}


def test_case_backgrounds_interleave_and_mirror_without_touching_the_rng_otherwise():
    from angiorecon.coronary.backgrounds import background_for_case

    hu = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    rng = np.random.default_rng(0)
    picks = [background_for_case(k, [(hu, None, "a"), (hu, None, "b")], 0.5, rng) for k in range(8)]
    assert [p and p[2] for p in picks] == [None, "b", None, "a", None, "b", None, "a"]
    assert all(np.array_equal(np.sort(p[0].ravel()), hu.ravel()) for p in picks if p)   # mirrored copies
    assert any(not np.array_equal(p[0], hu) for p in picks if p)
    untouched = np.random.default_rng(1)
    assert all(background_for_case(k, [], 0.5, untouched) is None for k in range(4))
    assert untouched.random() == np.random.default_rng(1).random()


@pytest.mark.parametrize("args, message, one_line", [     # usage errors print the usage first
    (["--ct", "pulmonary_cta", "--segmenter-fraction", "0.5"], "held-out CT", True),
    (["--ct", str(PULMONARY_CT_FILE), "--segmenter-fraction", "0.5"], "ct.nii.gz (pulmonary_cta) is the held-out CT", True),
    (["--ct", "nosuch", "--segmenter-fraction", "0.5"], "unknown sample 'nosuch'", True),
    (["--ct", "aorta_cta"], "--ct needs --segmenter-fraction above 0", False),
    (["--ct", "aorta_cta", "--segmenter-fraction", "0.5", "--ct-fraction", "2"], "--ct-fraction must be within", False),
])
def test_training_cli_names_a_bad_ct_before_any_work(tmp_path, args, message, one_line, capsys, monkeypatch):
    import angiorecon.coronary.train_refiner as tr

    monkeypatch.setattr(tr, "make_case", lambda *a, **k: pytest.fail("simulated before checking the CTs"))
    with pytest.raises(SystemExit) as e:
        tr.main([*args, "--out", str(tmp_path / "r.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1] and "train_refiner: error" in err[-1]
    assert len(err) == 1 or not one_line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--patch", "44", "--depth", "3"], ["--segmenter-fraction", "1.5"]])
def test_training_rejects_bad_arguments_before_any_work(tmp_path, args, capsys):
    from angiorecon.coronary.train_refiner import main

    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "r.pt")])
    assert e.value.code == 2 and args[0] in capsys.readouterr().err
    assert not (tmp_path / "r.pt").exists()
