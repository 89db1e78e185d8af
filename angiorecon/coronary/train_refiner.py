"""Train the two-view hull refiner (``refine.RefinerNet``) on simulated coronary cases, CPU.

    python -m angiorecon.coronary.train_refiner --cases 36 --steps 6000 --seed 1 \
        --segmenter-fraction 0.5 [--ct CT … --ct-fraction F] --threads 2 \
        [--init CHECKPOINT --lr 1e-3] --out angiorecon/weights/coronary_refiner.pt

Each case: a left or right tree from ``simulate_coronary`` (two clinical views, 512² detector), its
2D masks either perturbed like a segmenter would (1-px dilation/erosion, sub-pixel-to-1-px shifts
standing in for calibration error, false-positive specks) or produced by the shipped learned
segmenter from the simulated angiogram (with ``--ct``, a share of those angiograms is simulated
through real CT backgrounds, whose bone edges and lung texture give the segmenter's own kind of
errors; the benchmarks' held-out ``pulmonary_cta`` is refused), the soft visual hull on a
0.45–0.65 mm ROI grid, and targets: the true lumen (occupancy) and a centerness ridge
exp(−d²/2σ²), d = distance to the true centerline, σ = 0.5 mm. Training samples patches around hull
voxels; the loss is AutoCAR's BCE + soft Dice + centerness MSE (1:1:1). Case seeds are
``1000 + seed·1000 + i`` so held-out test seeds below 1000 never occur in training. A model card
(JSON) is written next to the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import BadInput
from ..metrics.evaluate import resample_to_grid
from .backgrounds import Background, background_for_case, ct_backgrounds
from .hull import roi_grid, visual_hull
from .refine import RefinerNet, candidate_mask, hull_features, load_refiner
from .train_segmenter import chained_wall_time, portable

CENTER_SIGMA_MM = 0.5


@dataclass
class Case:
    feats: np.ndarray        #: [C, z, y, x]
    occupancy: np.ndarray    #: [z, y, x] float32 {0, 1}
    centerness: np.ndarray   #: [z, y, x] float32 in [0, 1]
    candidates: np.ndarray   #: [z, y, x] bool


def perturb_masks(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Segmenter-like errors on binary masks: edge growth/shrink, small shifts, false-positive specks."""
    out = []
    for m in masks:
        m = m.astype(bool)
        r = rng.random()
        if r < 0.25:
            m = ndimage.binary_dilation(m)
        elif r < 0.4:
            core = ndimage.binary_erosion(m)     # shrink thick parts only, keep 1–2 px vessels
            m = core | (m & ~ndimage.binary_dilation(core, iterations=2))
        shift = rng.uniform(-1.0, 1.0, 2)
        m = ndimage.shift(m.astype(np.float32), shift, order=1) >= 0.5
        specks = np.zeros_like(m)
        for _ in range(rng.integers(0, 6)):
            r0, c0 = rng.integers(0, m.shape[0]), rng.integers(0, m.shape[1])
            specks[r0, c0] = True
        m |= ndimage.binary_dilation(specks, iterations=int(rng.integers(1, 4)))
        out.append(m)
    return np.stack(out).astype(np.float32)


def centerline_distance(tree, points: np.ndarray, step: float = 0.1) -> np.ndarray:
    """Distance (mm) from each point to the tree's centerline polyline (densely sampled)."""
    a, b, _, _ = tree.edges()
    samples = []
    for pa, pb in zip(tree.nodes[a], tree.nodes[b]):
        n = max(2, int(np.ceil(np.linalg.norm(pb - pa) / step)) + 1)
        samples.append(pa + np.linspace(0, 1, n)[:, None] * (pb - pa))
    return cKDTree(np.vstack(samples)).query(points)[0]


def make_case(seed: int, segmenter: bool = False, background: Background | None = None) -> Case:
    """One simulated two-view case with features and targets on its ROI grid.

    The 2D masks are the truth perturbed by :func:`perturb_masks`, or with ``segmenter`` the shipped
    learned segmenter's probabilities on the simulated angiogram: what the default pipeline feeds the
    refiner, with its real misses, merges and widths. ``background``: a CT to simulate the views
    through instead of the chest ellipse.
    """
    from ..simulation.products import CoronaryConfig, simulate_coronary
    from .segment2d import segment_views

    rng = np.random.default_rng(seed)
    side = "left" if rng.random() < 0.5 else "right"
    ct_hu, ct_grid = background[:2] if background is not None else (None, None)
    views = simulate_coronary(ct_hu, ct_grid, config=CoronaryConfig(side=side, motion_mm=float(rng.uniform(0, 0.5))),
                              seed=seed)
    if segmenter:
        masks = segment_views(views, "learned")
    else:
        masks = perturb_masks(views.masks_2d, rng)
    spacing = float(rng.uniform(0.45, 0.65))
    grid = roi_grid(views.geometry, masks, spacing=spacing)
    hull = visual_hull(views.geometry, masks, grid)
    cand = candidate_mask(hull)
    feats = hull_features(views.geometry, masks, grid, hull, cand)
    occ = (resample_to_grid(views.vessels.occupancy, views.vessels.grid, grid) >= 0.5).astype(np.float32)
    cen = np.zeros(grid.shape, dtype=np.float32)
    idx = np.argwhere(cand)
    d = centerline_distance(views.tree, grid.index_to_world(idx[:, ::-1].astype(np.float64)))
    cen[tuple(idx.T)] = np.exp(-0.5 * (d / CENTER_SIGMA_MM) ** 2)
    return Case(feats, occ, cen, cand)


def sample_patch(case: Case, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random patch (features, targets[2]) centred on a hull voxel, half the time on a true vessel voxel."""
    pool = case.occupancy if rng.random() < 0.5 and case.occupancy.any() else case.candidates
    idx = np.argwhere(pool)
    c = idx[rng.integers(len(idx))] + rng.integers(-size // 4, size // 4 + 1, 3)
    lo = c - size // 2
    shape = np.array(case.occupancy.shape)
    src = tuple(slice(max(l, 0), min(l + size, s)) for l, s in zip(lo, shape))
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    x = np.zeros((case.feats.shape[0], size, size, size), dtype=np.float32)
    y = np.zeros((2, size, size, size), dtype=np.float32)
    x[(slice(None),) + dst] = case.feats[(slice(None),) + src]
    y[(0,) + dst] = case.occupancy[src]
    y[(1,) + dst] = case.centerness[src]
    # the features are per-voxel scalars, so any axis flip/permutation is a valid augmentation
    perm = rng.permutation(3)
    x, y = x.transpose(0, *(perm + 1)), y.transpose(0, *(perm + 1))
    for ax in range(3):
        if rng.random() < 0.5:
            x, y = np.flip(x, ax + 1), np.flip(y, ax + 1)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def refiner_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice on occupancy, MSE on centerness (equal weights)."""
    occ_t, cen_t = target[:, 0], target[:, 1]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], occ_t)
    p = torch.sigmoid(logits[:, 0])
    dice = 1 - (2 * (p * occ_t).sum() + 1) / ((p * p).sum() + (occ_t * occ_t).sum() + 1)
    mse = torch.nn.functional.mse_loss(torch.sigmoid(logits[:, 1]), cen_t)
    return bce + dice + mse


def case_dice(net: RefinerNet, case: Case) -> tuple[float, float]:
    """(refined Dice, hull Dice) of one case against its truth."""
    from ..metrics.volume import dice
    from .refine import predict_tiles

    occ, _ = predict_tiles(net, case.feats, case.candidates)
    truth = case.occupancy >= 0.5
    return dice(occ >= 0.5, truth), dice(case.feats[0] >= 0.5, truth)


def train(cases: int, steps: int, seed: int, out: Path, *, patch: int = 40, batch: int = 2, lr: float = 2e-3,
          time_budget_s: float | None = None, val_seeds: tuple[int, ...] = (11,), segmenter_fraction: float = 0.0,
          cts: Sequence[str] = (), ct_fraction: float = 0.5, threads: int = 1, base: int = 8, depth: int = 2,
          init: Path | None = None, log=print) -> dict:
    """Generate ``cases`` simulated cases, train ``steps`` steps (or until ``time_budget_s`` of wall time
    since the start, data generation included), save weights + model card.

    Every ``1/segmenter_fraction``-th case takes its masks from the learned segmenter (validation too,
    when the fraction is above one half); the rest perturb the true masks. ``cts``: CT backgrounds for
    a share ``ct_fraction`` of the segmenter cases (perturbed true masks do not depend on the
    background); with them, each validation seed is also scored through the first CT. ``init``:
    continue from that checkpoint (fine-tuning; its architecture replaces ``base``/``depth`` and its
    model card is nested in the new one).
    """
    backgrounds = ct_backgrounds(cts)
    parent: dict | None = None
    net: RefinerNet | None = None          # built after seeding, unless a checkpoint gives it (checked before any work)
    if init is not None:
        if not Path(init).is_file():
            raise BadInput(f"--init checkpoint {init} does not exist")
        try:
            net, parent = load_refiner(init)
        except BadInput as exc:
            raise BadInput(f"--init {exc}") from None
        net.train()
        if patch % 2 ** net.depth:
            raise BadInput(f"--patch {patch} must be divisible by 2**depth = {2 ** net.depth} of the --init checkpoint")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mirror_rng = np.random.default_rng([seed, 1])
    t0 = time.time()
    data = []
    from_segmenter = [int((i + 1) * segmenter_fraction) > int(i * segmenter_fraction) for i in range(cases)]
    ct_cases: dict[int, str] = {}
    for i in range(cases):
        case_seed = 1000 + seed * 1000 + i
        background = None
        if from_segmenter[i]:
            background = background_for_case(sum(from_segmenter[:i]), backgrounds, ct_fraction, mirror_rng)
        if background is not None:
            ct_cases[case_seed] = background[2]
        data.append(make_case(case_seed, segmenter=from_segmenter[i], background=background))
        log(f"case {i + 1}/{cases} {data[-1].occupancy.shape} {background[2] if background else 'ellipse'} "
            f"({time.time() - t0:.0f} s)")
    t_data = time.time() - t0
    if net is None:
        net = RefinerNet(base=base, depth=depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, max(1, steps // 2), gamma=0.3)
    losses = []
    done = 0
    for step in range(steps):
        if time_budget_s is not None and time.time() - t0 > time_budget_s:
            log(f"time budget reached after {step} steps")
            break
        xs, ys = zip(*(sample_patch(data[rng.integers(len(data))], patch, rng) for _ in range(batch)))
        loss = refiner_loss(net(torch.from_numpy(np.stack(xs))), torch.from_numpy(np.stack(ys)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        done = step + 1
        if (step + 1) % 100 == 0:
            log(f"step {step + 1}/{steps} loss {np.mean(losses[-100:]):.4f} ({time.time() - t0:.0f} s)")
    net.eval()
    val = []
    for s in val_seeds:
        for background in [None, *backgrounds[:1]]:
            name = background[2] if background else "ellipse"
            d_ref, d_hull = case_dice(net, make_case(s, segmenter=segmenter_fraction > 0.5 or background is not None,
                                                     background=background))
            val.append({"seed": s, "background": name, "dice_refined": round(d_ref, 4), "dice_hull": round(d_hull, 4)})
            log(f"validation seed {s} ({name}): refined Dice {d_ref:.3f} vs hull {d_hull:.3f}")
    wall = time.time() - t0
    meta = {"cases": cases, "steps": steps, "steps_done": done, "time_budget_s": time_budget_s, "seed": seed,
            "patch": patch, "batch": batch, "lr": lr,
            "case_seeds": [1000 + seed * 1000 + i for i in range(cases)], "segmenter_fraction": segmenter_fraction,
            "segmenter_case_seeds": [1000 + seed * 1000 + i for i in range(cases) if from_segmenter[i]],
            "ct_backgrounds": {"cts": [b[2] for b in backgrounds], "fraction_of_segmenter_cases":
                               ct_fraction if backgrounds else 0.0, "case_seeds": ct_cases},
            "center_sigma_mm": CENTER_SIGMA_MM,
            "final_loss": float(np.mean(losses[-100:])) if losses else None, "validation": val,
            "wall_time_s": round(wall, 1), "data_time_s": round(t_data, 1), "threads": threads,
            "init_from": None if init is None else {"path": portable(init), "model_card": parent},
            "total_wall_time_s_including_init": chained_wall_time(wall, parent)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")          # a run killed while saving leaves the previous weights intact
    torch.save({"config": net.config, "state_dict": net.state_dict(), "meta": meta}, tmp)
    tmp.replace(out)
    card = {"name": "coronary_refiner", "task": "two-view visual hull → occupancy + centerness (3D U-Net)",
            "architecture": {"type": "RefinerNet 3D U-Net", **net.config,
                             "parameters": sum(p.numel() for p in net.parameters())},
            "inputs": "min/max over views of the mask and of the in-mask 2D edge distance (object mm, /3 mm), "
                      "on the dilated visual hull",
            "outputs": ["occupancy (sigmoid)", "centerness exp(-d^2/2 sigma^2) to the centerline"],
            "training_data": "simulate_coronary left/right trees, default CoronaryConfig (512², 2 views 30–90° "
                             "apart), perturbed true masks or (segmenter_fraction of the cases) the shipped "
                             "learned segmenter's masks (part of them simulated through the CTs in "
                             "ct_backgrounds), ROI grid 0.45–0.65 mm; no real angiograms",
            "command": "python -m angiorecon.coronary.train_refiner " + " ".join(map(portable, sys.argv[1:])) if
            sys.argv[0].endswith("train_refiner.py") else f"train(cases={cases}, steps={steps}, seed={seed})",
            "torch": torch.__version__, **meta}
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m angiorecon.coronary.train_refiner",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patch", type=int, default=40)
    ap.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    ap.add_argument("--segmenter-fraction", type=float, default=0.0,
                    help="share of cases whose masks come from the shipped learned segmenter (0–1)")
    ap.add_argument("--ct", action="append", default=[], metavar="CT",
                    help="CT background (sample name or HU volume) for segmenter cases; repeatable; "
                         "pulmonary_cta is held out and refused")
    ap.add_argument("--ct-fraction", type=float, default=0.5, help="share of the segmenter cases through a --ct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (lower it to fine-tune with --init)")
    ap.add_argument("--init", type=Path, default=None,
                    help="continue from this refiner checkpoint (fine-tuning; its --base/--depth are kept)")
    ap.add_argument("--base", type=int, default=8, help="channels of the first U-Net level")
    ap.add_argument("--depth", type=int, default=2, help="U-Net levels below the first (patch must divide by 2**depth)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    for name, value in (("--segmenter-fraction", a.segmenter_fraction), ("--ct-fraction", a.ct_fraction)):
        if not 0.0 <= value <= 1.0:
            ap.error(f"{name} must be within 0–1, got {value}")
    if a.ct and a.segmenter_fraction == 0:
        ap.error("--ct needs --segmenter-fraction above 0: only the segmenter's masks depend on the background")
    if a.depth < 1 or a.patch % 2 ** a.depth:
        ap.error(f"--patch {a.patch} must be divisible by 2**depth = {2 ** max(a.depth, 0)} (depth >= 1)")
    try:
        train(a.cases, a.steps, a.seed, a.out, patch=a.patch, lr=a.lr, time_budget_s=a.time_budget,
              segmenter_fraction=a.segmenter_fraction, cts=a.ct, ct_fraction=a.ct_fraction, threads=a.threads,
              base=a.base, depth=a.depth, init=a.init, log=lambda m: print(m, flush=True))
    except BadInput as exc:
        ap.exit(2, f"{ap.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
