"""Deep-DSA quality benchmark: one table, every number measured in this run against its peer.

(a) Held-out synthetic pairs from a CT never used in training (default: TotalSegmentator
    ``example_ct``; ``--vessels coronary`` selective coronary injections, the shipped model's target,
    or ``trees``): PSNR/SSIM of the DDSA output against the ideal noise-free DSA, beside
    conventional subtraction ``fill − mask`` with perfect registration and with a small mask/fill
    misregistration (shift 1–3 px + rotation ≤ 1°, the motion artefact DDSA avoids).
(b) Real coronary angiograms ``xca-cervantes40/Angios_40_testing`` (evaluation only — never used for
    training or tuning; ``--xca .../Angios_40_training`` to compare settings): pixel-wise ROC AUC of
    the DDSA output and of multi-scale Frangi vesselness against the expert masks.
(c) CPU inference throughput on 512² frames (frames/s), Frangi in the same run as the peer.

Usage: ``python benchmarks/ddsa_quality.py [--model PATH] [--ct CT[::MASK]] [--xca DIR] [--pairs N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from angiorecon.ddsa.frangi import frangi  # noqa: E402
from angiorecon.ddsa.infer import DeepDSA, read_frames  # noqa: E402
from angiorecon.ddsa.train import pearson  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Pixel-wise ROC AUC (Mann–Whitney U with average ranks for ties)."""
    s, t = np.asarray(score, np.float64).ravel(), np.asarray(truth).ravel() > 0
    r = rankdata(s)
    n1, n0 = int(t.sum()), int((~t).sum())
    return float((r[t].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((x - ref) ** 2))
    peak = float(ref.max() - ref.min())
    return 10 * np.log10(peak ** 2 / max(mse, 1e-20))


def ssim(x: np.ndarray, ref: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(x, ref, data_range=float(ref.max() - ref.min())))


def misregister(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask moved by a 1–3 px shift in a random direction and a rotation of up to 1° (patient motion)."""
    shift = rng.uniform(1, 3)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.deg2rad(rng.uniform(-1, 1))
    c, s = np.cos(rot), np.sin(rot)
    mat = np.array([[c, -s], [s, c]])
    centre = (np.array(mask.shape) - 1) / 2
    offset = centre - mat @ centre + shift * np.array([np.sin(a), np.cos(a)])
    return ndimage.affine_transform(mask, mat, offset, order=1, mode="nearest")


def _trees_pairs(ct: str, n: int, seed: int, detector: int):
    """(fill, mask, ideal DSA) from the pair generator: body-wide trees at IV-to-selective iodine."""
    from angiorecon.simulation.pairs import PairGenerator
    from angiorecon.ddsa.sources import _sample_with_retry, load_ct

    hu, grid, mask = load_ct(ct)
    gen = PairGenerator(hu, grid, vessel_mask=mask, detector=(detector, detector), seed=seed)
    for _ in range(n):
        s = _sample_with_retry(gen)
        yield s["fill"], s["mask"], s["dsa"]


def _coronary_pairs(ct: str, n: int, seed: int, detector: int, views: int = 3):
    """(fill, mask, ideal DSA) of selective coronary injections over the CT; the mask run is the same
    simulation (same tree, views and acquisition) without iodine, with its own, independent noise."""
    from dataclasses import replace

    from angiorecon.ddsa.sources import load_ct
    from angiorecon.simulation import physics
    from angiorecon.simulation.products import CoronaryConfig, simulate_coronary

    hu, grid, _ = load_ct(ct)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        cfg = CoronaryConfig(views=views, detector=(detector, detector), pixel_spacing=(0.5, 0.8),
                             i0=float(rng.uniform(5e4, 3e5)), c_peak=float(rng.uniform(100, 200)))
        s = int(rng.integers(2 ** 31))
        fill = simulate_coronary(hu, grid, config=cfg, seed=s)
        # noise-free background (same blur and scatter), then fresh Poisson noise for the mask run
        clean = simulate_coronary(hu, grid, config=replace(cfg, c_peak=0.0, i0=1e12), seed=s).counts / 1e12
        mask = physics.noisy_counts(cfg.i0 * clean, rng)
        for f, m, d in zip(physics.counts_to_line_integral(fill.counts, cfg.i0),
                           physics.counts_to_line_integral(mask, cfg.i0), fill.iodine):
            if done < n:
                done += 1
                yield f, m, d


def synthetic_rows(net: DeepDSA, ct: str, n: int, seed: int, detector: int,
                   vessels: str = "coronary") -> list[tuple[str, str, str]]:
    pairs = _coronary_pairs(ct, n, seed, detector) if vessels == "coronary" else _trees_pairs(ct, n, seed, detector)
    rng = np.random.default_rng(seed)
    res: dict[str, list[tuple[float, float, float]]] = {"ddsa": [], "sub": [], "sub_moved": []}
    for fill, msk, ideal in pairs:
        outs = {"ddsa": net.predict(fill), "sub": np.maximum(fill - msk, 0),
                "sub_moved": np.maximum(fill - misregister(msk, rng), 0)}
        for k, v in outs.items():
            res[k].append((psnr(v, ideal), ssim(v, ideal), pearson(v, ideal)))
    name = Path(ct.partition("::")[0]).parent.name or ct
    label = {"ddsa": "DDSA (fill frame only)", "sub": "subtraction, registered",
             "sub_moved": "subtraction, 1-3 px + <=1 deg motion"}
    rows = []
    for k, v in res.items():
        a = np.array(v)
        rows.append((f"(a) synthetic {vessels} {name}, {n}x{detector}^2", label[k],
                     f"PSNR {a[:, 0].mean():6.2f} dB  SSIM {a[:, 1].mean():.3f}  Pearson r {a[:, 2].mean():.3f}"))
    return rows


def xca_rows(net: DeepDSA, folder: Path) -> list[tuple[str, str, str]]:
    from PIL import Image

    images = sorted((p for p in folder.glob("*.png") if not p.stem.endswith("_gt")), key=lambda p: int(p.stem))
    auc_d, auc_f = [], []
    for img in images:
        gt = np.asarray(Image.open(img.with_name(f"{img.stem}_gt.png")).convert("L"))
        fr = read_frames(img)
        auc_d.append(roc_auc(net.predict(fr.p[0]), gt))
        v = np.asarray(Image.open(img).convert("L"), np.float64)
        auc_f.append(roc_auc(frangi(v), gt))
    d, f = np.array(auc_d), np.array(auc_f)
    tag = f"(b) real XCA {folder.name}, {len(images)} images"
    return [(tag, "DDSA output", f"ROC AUC {d.mean():.4f} (min {d.min():.3f}; beats Frangi on {int((d > f).sum())}/{len(d)})"),
            (tag, "Frangi vesselness", f"ROC AUC {f.mean():.4f} (min {f.min():.3f})")]


def throughput_rows(net: DeepDSA, n: int = 8) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((n, 512, 512)).astype(np.float32)
    net.predict(frames[:1])
    t = time.perf_counter()
    net.predict(frames)
    ddsa = n / (time.perf_counter() - t)
    tiled = DeepDSA(net.model, net.domain, device=net.device, tile=256, overlap=32, batch=net.batch)
    t = time.perf_counter()
    tiled.predict(frames)
    ddsa_tiled = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for f in frames:
        frangi(f)
    fr = n / (time.perf_counter() - t)
    import torch

    tag = f"(c) CPU throughput 512^2 ({torch.get_num_threads()} threads)"
    return [(tag, f"DDSA, default (tile {net.tile}: whole frame)", f"{ddsa:.2f} frames/s"),
            (tag, "DDSA, 256^2 tiles overlap 32", f"{ddsa_tiled:.2f} frames/s"),
            (tag, "Frangi (5 scales)", f"{fr:.2f} frames/s")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="weights/checkpoint (default: the shipped model)")
    ap.add_argument("--ct", default=str(SHARED / "totalseg-ct-samples" / "example_ct" / "example_ct.nii.gz"),
                    help="held-out CT (never used in training), optionally CT::VESSEL_MASK")
    ap.add_argument("--xca", type=Path, default=SHARED / "xca-cervantes40" / "Angios_40_testing")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--vessels", choices=("coronary", "trees"), default="coronary",
                    help="held-out pairs: selective coronary injections (what the shipped model targets) or "
                         "the pair generator's body-wide trees")
    ap.add_argument("--detector", type=int, default=256)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    net = DeepDSA.load(args.model, device="cpu")
    print(f"model: {net.meta['path']} (step {net.meta.get('step')})", flush=True)
    rows = synthetic_rows(net, args.ct, args.pairs, args.seed, args.detector, args.vessels)
    if args.xca.is_dir():
        rows += xca_rows(net, args.xca)
    else:
        print(f"(b) skipped: {args.xca} not found")
    rows += throughput_rows(net)
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'benchmark':<{w0}}  {'method':<{w1}}  result")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}")


if __name__ == "__main__":
    main()
