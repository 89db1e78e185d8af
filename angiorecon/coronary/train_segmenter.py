"""Train the small learned 2D coronary segmenter (light U-Net) on synthetic angiograms, CPU, one thread.

``python -m angiorecon.coronary.train_segmenter --steps N --seed S --out PATH [--real-dir DIR] [--ct CT]…``

Data: two-view cases from :func:`angiorecon.simulation.products.simulate_coronary` with varied seeds,
sides, SID/SOD, dose, blur and scatter, part of them through real CT backgrounds (``--ct``; the
benchmarks' held-out ``pulmonary_cta`` is refused); each view is turned into the log domain exactly like
:func:`angiorecon.coronary.views.load_views` (−ln intensity, vessels bright), rescaled by a random
factor (real 300² angiograms show vessels at about half the simulator's pixel scale), passed through
:func:`~angiorecon.coronary.segment2d.normalise_image` and cut into random crops with flips. Targets
are the simulator's projected lumen masks. With ``--real-dir`` (``Angios_40_training`` ONLY — the
testing half is evaluation data) the second half of the steps mixes real crops with expert masks
into every batch, and the last ``--real-val`` real images pick the probability threshold.
Loss: BCE + soft Dice. Writes the checkpoint (< 5 MB) and a model card ``<out>.json`` with the exact
command, seed, wall time and validation scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BadInput
from .backgrounds import Background, background_for_case, ct_backgrounds
from .segment2d import normalise_image


def synthetic_views(n_cases: int, seed: int, backgrounds: Sequence[Background] = (), ct_fraction: float = 0.5
                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Log-domain views, their lumen masks and each view's background name, from ``n_cases`` varied
    simulated two-view cases.

    With ``backgrounds``, a share ``ct_fraction`` of the cases (evenly interleaved, so the held-out last
    cases include both kinds) is simulated through a real CT instead of the smooth chest ellipse: bone
    edges, lung texture and a 4–6 log-unit attenuation are what the segmenter meets on real runs. The CT
    is mirrored at random (left–right, head–foot) so each CT gives four anatomies.
    """
    from tqdm import tqdm

    from ..simulation.products import CoronaryConfig, simulate_coronary

    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    for k in tqdm(range(n_cases), desc="simulating", file=sys.stderr):
        cfg = CoronaryConfig(side=str(rng.choice(["left", "right", "both"])),
                             i0=float(10 ** rng.uniform(4.0, 5.0)),
                             blur_sigma_px=float(rng.uniform(0.5, 1.3)),
                             scatter_fraction=float(rng.uniform(0.0, 0.3)),
                             c_peak=float(rng.uniform(90.0, 200.0)),
                             stenoses=int(rng.integers(0, 3)))
        hu, grid, label = background_for_case(k, backgrounds, ct_fraction, rng) or (None, None, "chest-ellipse")
        case = simulate_coronary(hu, grid, config=cfg, seed=seed * 1000 + k)
        for v in range(case.counts.shape[0]):
            images.append(case.images[v])
            masks.append(case.masks_2d[v].astype(np.float32))
            labels.append(label)
    return images, masks, labels


def real_views(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Log-domain real angiograms (PNG, vessels dark on display) and expert masks ``N_gt.png``."""
    from .views import png_to_log

    from skimage import io

    if "testing" in folder.name.lower():
        raise BadInput(f"{folder} looks like an evaluation split; fine-tune only on the training half")
    names = sorted((p for p in folder.glob("*.png") if not p.stem.endswith("_gt")), key=lambda p: int(p.stem)
                   if p.stem.isdigit() else p.stem)
    if not names:
        raise BadInput(f"no angiogram PNGs in {folder}")
    images, masks = [], []
    for p in names:
        gt = p.with_name(f"{p.stem}_gt.png")
        if not gt.is_file():
            raise BadInput(f"{p} has no expert mask {gt.name}")
        images.append(png_to_log(io.imread(p)))
        masks.append((io.imread(gt) > 127).astype(np.float32).reshape(images[-1].shape))
    return images, masks, [p.name for p in names]


def _resized(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F

    if abs(factor - 1.0) < 1e-3:
        return image, mask
    size = [max(8, int(round(s * factor))) for s in image.shape]
    t = torch.from_numpy(np.stack([image, mask]))[:, None]
    img = F.interpolate(t[:1], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    msk = F.interpolate(t[1:], size=size, mode="area")[0, 0]
    return img.numpy(), (msk.numpy() >= 0.5).astype(np.float32)


def _crop(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape
    if h < size or w < size:
        pad = ((0, max(0, size - h)), (0, max(0, size - w)))
        x, y = np.pad(x, pad, mode="reflect"), np.pad(y, pad)
        h, w = x.shape
    r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    x, y = x[r:r + size, c:c + size], y[r:r + size, c:c + size]
    k = int(rng.integers(0, 4))
    x, y = np.rot90(x, k), np.rot90(y, k)
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def sample_synthetic(rng: np.random.Generator, images: list[np.ndarray], masks: list[np.ndarray],
                     size: int, scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """One augmented crop: random view, random rescale, normalisation on the whole view, then crop."""
    i = int(rng.integers(len(images)))
    img, msk = _resized(images[i], masks[i], float(rng.uniform(*scale)))
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.01), img.shape).astype(np.float32)
    return _crop(rng, normalise_image(img), msk, size)


def sample_real(rng: np.random.Generator, normalised: list[np.ndarray], masks: list[np.ndarray],
                size: int) -> tuple[np.ndarray, np.ndarray]:
    i = int(rng.integers(len(normalised)))
    return _crop(rng, normalised[i], masks[i], size)


def loss_fn(logits: Any, target: Any) -> Any:
    """BCE + soft Dice (Dice keeps thin vessels from being drowned by background)."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


def best_threshold(probs: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    """Threshold (0.2…0.8) with the best mean Dice on validation views, and that Dice."""
    from ..metrics.volume import dice

    best = (0.5, -1.0)
    for t in np.arange(0.2, 0.81, 0.05):
        d = float(np.mean([dice(p >= t, m > 0.5) for p, m in zip(probs, masks)]))
        if d > best[1]:
            best = (float(round(t, 2)), d)
    return best


def train(steps: int, seed: int, out: Path, *, cases: int = 40, batch: int = 4, crop: int = 256,
          lr: float = 2e-3, real_dir: Path | None = None, real_val: int = 8,
          scale: tuple[float, float] = (0.5, 1.0), init: Path | None = None,
          real_fraction: float = 0.5, cts: Sequence[str] = (), ct_fraction: float = 0.5) -> dict[str, Any]:
    """Train, pick the threshold, write ``out`` (checkpoint) and ``out.json`` (model card).

    ``init``: continue from a checkpoint (its model card is nested in the new one); then real crops
    are mixed in from the first step, else from half-way. ``real_fraction`` of each mixed batch is real.
    ``cts``: CT backgrounds for ``ct_fraction`` of the simulated cases (:func:`synthetic_views`).
    """
    import torch
    from tqdm import tqdm

    from ..metrics.volume import dice
    from ..models.unet import build_unet, count_parameters

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    # every input is read before the minutes of simulation, so a bad path or name fails at once
    backgrounds = ct_backgrounds(cts)
    real_tr: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    real_va: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    real_names: list[str] = []
    if real_dir is not None:
        rimg, rmsk, real_names = real_views(real_dir)
        if len(rimg) <= real_val:
            raise BadInput(f"{real_dir} has {len(rimg)} images; need more than --real-val {real_val}")
        real_tr = ([normalise_image(x) for x in rimg[:-real_val]], rmsk[:-real_val])
        real_va = (rimg[-real_val:], rmsk[-real_val:])
    model = build_unet("light")
    parent: dict[str, Any] | None = None
    if init is not None:
        if not Path(init).is_file():
            raise BadInput(f"--init checkpoint {init} does not exist")
        state = torch.load(init, map_location="cpu", weights_only=True)
        model = build_unet(dict(state["config"]))
        model.load_state_dict(state["model"])
        parent = dict(state.get("meta", {}))
    images, masks, labels = synthetic_views(cases, seed, backgrounds, ct_fraction)
    val_img, val_msk, val_lab = images[-4:], masks[-4:], labels[-4:]
    images, masks = images[:-4], masks[:-4]
    n_real = int(round(real_fraction * batch))
    mix_from = 0 if init is not None else steps // 2
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses: list[float] = []
    model.train()
    for step in tqdm(range(steps), desc="training", file=sys.stderr):
        mixed = real_tr is not None and step >= mix_from
        pairs = [sample_real(rng, *real_tr, crop) if mixed and b < n_real else
                 sample_synthetic(rng, images, masks, crop, scale) for b in range(batch)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()

    def predict(img: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(normalise_image(img))[None, None]))[0, 0].numpy()

    sim_probs = [predict(_resized(i, m, 0.75)[0]) for i, m in zip(val_img, val_msk)]
    sim_masks = [_resized(i, m, 0.75)[1] for i, m in zip(val_img, val_msk)]
    real_probs = [predict(i) for i in real_va[0]]
    thr_probs, thr_masks = (real_probs, real_va[1]) if real_probs else (sim_probs, sim_masks)
    threshold, val_dice = best_threshold(thr_probs, thr_masks)
    sim_dice = {lab: round(float(np.mean([dice(p >= threshold, m > 0.5) for p, m, vl in
                                          zip(sim_probs, sim_masks, val_lab) if vl == lab])), 4)
                for lab in sorted(set(val_lab))}
    wall = time.time() - t0
    meta = {
        "name": "coronary_segmenter", "architecture": "angiorecon.models.unet LIGHT (width 16, depth 3, group norm)",
        "parameters": count_parameters(model), "input": "normalise_image(log-domain view, vessels bright)",
        "output": "vessel logit; probability = sigmoid, mask = probability >= threshold",
        "threshold": threshold,
        "command": "python -m angiorecon.coronary.train_segmenter " + " ".join(map(portable, sys.argv[1:])),
        "seed": seed, "steps": steps, "batch": batch, "crop": crop, "lr": lr, "synthetic_cases": cases,
        "scale_range": list(scale), "threads": 1, "device": "cpu", "wall_time_s": round(wall, 1),
        "final_loss_mean_last_50": float(np.mean(losses[-50:])),
        "validation": {"synthetic_dice_4_views_scale_0.75": sim_dice,
                       "threshold_chosen_on": "Angios_40_training last %d images" % real_val if real_probs
                       else "4 held-out synthetic views",
                       "dice_at_threshold": round(val_dice, 4)},
        "training_data": {"synthetic": f"simulate_coronary, {cases} cases (seeds {seed * 1000}.."
                                       f"{seed * 1000 + cases - 1}; the last 2 cases' views held out)",
                          "ct_backgrounds": {"cts": [b[2] for b in backgrounds], "fraction_of_cases":
                                             ct_fraction if backgrounds else 0.0,
                                             "augmentation": "random left-right / head-foot mirroring"},
                          "real": (f"{portable(real_dir)} (Angios_40_training only): fine-tune {real_names[:-real_val]}, "
                                   f"threshold on {real_names[-real_val:]}") if real_dir else None},
        "init_from": None if init is None else {"path": portable(init), "model_card": parent},
        "real_fraction_of_mixed_batches": real_fraction,
        "total_wall_time_s_including_init": chained_wall_time(wall, parent),
        "license": "trained by this project on its own synthetic data (and BSD-3 xca-cervantes40 training half)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save({"config": model.config.to_dict(), "model": model.state_dict(), "threshold": threshold,
                "meta": meta}, tmp)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return meta


def chained_wall_time(wall: float, parent: dict[str, Any] | None) -> float:
    """Seconds of this run plus those of the checkpoint chain it continued (its model card ``parent``)."""
    parent = parent or {}
    return round(wall + float(parent.get("total_wall_time_s_including_init", parent.get("wall_time_s", 0.0))), 1)


def portable(path: str | Path) -> str:
    """A path as a model card records it: relative to the working directory (the checkout), so a
    shipped card names no folder of the machine it was trained on."""
    return os.path.relpath(Path(path).resolve()) if Path(path).is_absolute() else str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m angiorecon.coronary.train_segmenter",
                                description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt); the model card goes beside it")
    p.add_argument("--cases", type=int, default=40, help="simulated two-view cases")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--real-dir", type=Path, default=None, help="Angios_40_training folder (optional fine-tuning)")
    p.add_argument("--real-val", type=int, default=8, help="real images held out to choose the threshold")
    p.add_argument("--init", type=Path, default=None, help="continue from this checkpoint (fine-tuning)")
    p.add_argument("--real-fraction", type=float, default=0.5, help="share of real crops in mixed batches")
    p.add_argument("--ct", action="append", default=[], metavar="CT",
                   help="CT background (sample name or HU volume path; repeatable) for simulated cases")
    p.add_argument("--ct-fraction", type=float, default=0.5, help="share of simulated cases through a --ct")
    a = p.parse_args(argv)
    for name, value in (("--ct-fraction", a.ct_fraction), ("--real-fraction", a.real_fraction)):
        if not 0.0 <= value <= 1.0:
            p.error(f"{name} must be within 0–1, got {value}")
    try:
        meta = train(a.steps, a.seed, a.out, cases=a.cases, batch=a.batch, crop=a.crop, lr=a.lr,
                     real_dir=a.real_dir, real_val=a.real_val, init=a.init, real_fraction=a.real_fraction,
                     cts=a.ct, ct_fraction=a.ct_fraction)
    except BadInput as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    print(json.dumps(meta["validation"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
