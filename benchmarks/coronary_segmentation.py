"""2D coronary segmentation quality and speed: Frangi + hysteresis vs the shipped learned segmenter.

    python benchmarks/coronary_segmentation.py [--data DIR] [--spacing 0.5] [--sim-cases 2] [--ct CT]… [--csv FILE] [--weights PT]

Real data: ``xca-cervantes40/Angios_40_testing`` (40 clinical angiograms with expert masks; EVALUATION
ONLY: nothing was trained or tuned on it). The PNGs go through the same ``png_to_log`` as
``load_views``. These images carry no pixel spacing; Frangi's mm scales use ``--spacing`` (0.5 mm,
the value chosen on ``Angios_40_training``); the learned model does not use the spacing. Also scored
on fresh simulated 512² views (seeds unused in training), over the smooth chest ellipse and through
each ``--ct`` background (default ``pulmonary_cta``, a real chest CT the segmenter never saw in
training; ``aorta_cta`` was a training background). Prints, per method and data set, mean ± s.e.
Dice and true clDice (Shit et al., ``angiorecon.metrics.volume.cldice``), and frames/s on this
machine's CPU (one thread for both), plus learned/Frangi ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "xca-cervantes40" / "Angios_40_testing"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--spacing", type=float, default=0.5, help="assumed mm/pixel of the real PNGs (Frangi scales)")
    ap.add_argument("--sim-cases", type=int, default=2, help="simulated two-view cases (0 = skip)")
    ap.add_argument("--ct", action="append", default=None, metavar="CT",
                    help="CT background for a second simulated set (sample name or HU volume; repeatable; "
                         "default pulmonary_cta)")
    ap.add_argument("--csv", type=Path, default=None, help="per-image scores")
    ap.add_argument("--weights", type=Path, default=None, help="segmenter checkpoint (default: the shipped one)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from skimage import io

    from angiorecon.coronary.backgrounds import HELD_OUT_CT
    from angiorecon.coronary.segment2d import FrangiParams, frangi_segment, learned_segmenter
    from angiorecon.coronary.views import png_to_log
    from angiorecon.ddsa.sources import load_ct
    from angiorecon.errors import BadInput
    from angiorecon.metrics.volume import cldice, dice
    from angiorecon.simulation.products import CoronaryConfig, simulate_coronary

    torch.set_num_threads(1)
    if not args.data.is_dir():
        raise SystemExit(f"no data folder {args.data}")
    names = sorted((p for p in args.data.glob("*.png") if not p.stem.endswith("_gt")), key=lambda p: int(p.stem))
    sets: dict[str, list[tuple[str, np.ndarray, np.ndarray, float]]] = {"real Angios_40_testing": [
        (p.name, png_to_log(io.imread(p)), io.imread(p.with_name(f"{p.stem}_gt.png")) > 127, args.spacing)
        for p in names]}
    backgrounds: dict[str, tuple[Any, Any]] = {}
    if args.sim_cases:                   # the ellipse, then each CT (read before the slow simulation)
        backgrounds["simulated 512²"] = (None, None)
        for spec in args.ct or [HELD_OUT_CT]:
            try:
                backgrounds[f"sim 512² {Path(spec).name}"] = load_ct(spec)[:2]
            except BadInput as exc:
                ap.error(f"--ct {spec}: {exc}")
    for set_name, (hu, grid) in backgrounds.items():
        sim = []
        for s in range(args.sim_cases):
            case = simulate_coronary(hu, grid, config=CoronaryConfig(), seed=90_000 + s)
            for v in range(case.counts.shape[0]):
                sim.append((f"sim{s}_view{v}", case.images[v],
                            case.masks_2d[v], float(case.geometry.pixel_spacing[v, 1])))
        sets[set_name] = sim

    seg = learned_segmenter("cpu", args.weights)
    seg.segment(sets[next(iter(sets))][0][1])        # warm-up (first call allocates)
    methods = {
        "frangi+hysteresis": lambda img, sp: frangi_segment(img, sp, FrangiParams())[1],
        "learned (light U-Net)": lambda img, sp: seg.segment(img, int(round(FrangiParams().min_area_mm2 / sp ** 2)))[1],
    }
    rows = []
    print(f"{'data':24s} {'method':24s} {'n':>3s} {'Dice':>14s} {'clDice':>14s} {'frames/s':>9s}")
    summary: dict[tuple[str, str], tuple[float, float, float]] = {}
    for set_name, items in sets.items():
        for m_name, fn in methods.items():
            d, c, t = [], [], 0.0
            for name, img, gt, sp in items:
                t0 = time.perf_counter()
                mask = fn(img, sp)
                t += time.perf_counter() - t0
                d.append(dice(mask, gt))
                c.append(cldice(mask[None], gt[None])["cldice"])
                rows.append({"data": set_name, "method": m_name, "image": name, "dice": d[-1], "cldice": c[-1]})
            d_a, c_a = np.asarray(d), np.asarray(c)
            se = lambda a: a.std(ddof=1) / np.sqrt(a.size) if a.size > 1 else 0.0  # noqa: E731
            fps = len(items) / t
            summary[(set_name, m_name)] = (d_a.mean(), c_a.mean(), fps)
            print(f"{set_name:24s} {m_name:24s} {len(items):3d} {d_a.mean():6.3f} ± {se(d_a):5.3f} "
                  f"{c_a.mean():6.3f} ± {se(c_a):5.3f} {fps:9.1f}")
    names_m = list(methods)
    for set_name in sets:
        a, b = summary[(set_name, names_m[1])], summary[(set_name, names_m[0])]
        print(f"{set_name:24s} learned/frangi ratio: Dice {a[0] / b[0]:.2f}x, clDice {a[1] / b[1]:.2f}x, "
              f"speed {a[2] / b[2]:.2f}x")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
