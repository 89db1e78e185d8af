"""``simulate``: synthetic DSA products with ground truth (rotational runs, training pairs, coronary views).

* ``rotational`` — mask + fill runs of a C-arm rotation (default 133 frames over 200°, 256²) with
  bolus filling during the rotation, written as a VPAL/4DRGS dataset (``mask_run``/``fill_run``/
  ``proj`` + ``transforms.json``) and as DICOM XA, with truth: vessel mask/occupancy, mesh,
  centerlines, 4D iodine, arrival and time-to-peak maps;
* ``pairs`` — fill/mask/DSA training pairs at random C-arm poses (stacks + per-pair metadata);
* ``two-view`` — coronary angiograms from a few clinical views as DICOM XA single frames, with truth:
  3D mask, mesh, centerlines, 2D masks.

Anatomy: ``--sample aorta_cta`` (shipped real CTA + vessel masks) or ``--ct FILE [--vessels FILE…]``
(HU volume; vessel files are binary masks or label maps on the same grid). Deterministic for a
given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..worker import TaskContext

HELP = "simulate DSA products with ground truth: rotational runs, training pairs, two-view coronary angiograms"
PRODUCTS = ("rotational", "pairs", "two-view")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("product", choices=PRODUCTS, help="what to simulate")
    src = p.add_argument_group("anatomy")
    src.add_argument("--sample", help="shipped sample CT with vessel masks (e.g. aorta_cta)")
    src.add_argument("--ct", type=Path, help="CT volume in HU (NIfTI/NRRD/MHA)")
    src.add_argument("--vessels", type=Path, action="append", default=[],
                     help="vessel mask or label map on the CT grid (repeatable; nonzero = contrast-filled vessel)")
    src.add_argument("--vessel-source", choices=("real", "synthetic", "both"), default=None,
                     help="rotational: iodine in the given masks, in a synthetic tree grown in the body, or both "
                          "(default: real when masks are given, else synthetic)")
    acq = p.add_argument_group("acquisition")
    acq.add_argument("--frames", type=int, default=133, help="rotational: number of frames")
    acq.add_argument("--arc", type=float, default=200.0, help="rotational: arc in degrees")
    acq.add_argument("--duration", type=float, default=4.4, help="rotational: rotation time in seconds")
    acq.add_argument("--detector", type=int, default=None,
                     help="detector size in pixels (square; default 256, two-view 512)")
    acq.add_argument("--det-spacing", type=float, default=None, help="rotational: pixel size in mm (default: fit)")
    acq.add_argument("--sad", type=float, default=750.0, help="rotational: source–isocentre distance, mm")
    acq.add_argument("--sid", type=float, default=1200.0, help="rotational: source–detector distance, mm")
    acq.add_argument("--energy", type=float, default=65.0, help="effective energy, keV")
    acq.add_argument("--i0", type=float, default=None, help="unattenuated photons per pixel (dose)")
    acq.add_argument("--blur", type=float, default=None, help="detector blur sigma, pixels")
    acq.add_argument("--scatter", type=float, default=0.0,
                     help="scatter-to-primary ratio of a smooth scatter background (0 = none; e.g. 0.3)")
    acq.add_argument("--motion-deg", type=float, default=0.0,
                     help="max rigid rotation: rotational — patient between mask and fill runs; two-view — heart per view")
    acq.add_argument("--motion-mm", type=float, default=0.0,
                     help="max rigid shift: rotational — patient between mask and fill runs; two-view — heart per view")
    acq.add_argument("--c-peak", type=float, default=None,
                     help="peak iodine concentration in the arteries, mg/ml (default: rotational 40 — aortic "
                          "flush; two-view 150 — selective coronary injection)")
    acq.add_argument("--velocity", type=float, default=120.0, help="rotational: bolus speed, mm/s")
    acq.add_argument("--late-fraction", type=float, default=0.0,
                     help="rotational: fraction of branches that fill late (0.8–2 s extra delay)")
    acq.add_argument("--branch-variability", type=float, default=0.0,
                     help="rotational: per-branch log-normal spread of bolus width and height (e.g. 0.2)")
    acq.add_argument("--dicom-display", choices=("raw", "log"), default="raw",
                     help="DICOM pixels: raw detector counts (LIN) or a vendor-like 12-bit log display (LOG)")
    acq.add_argument("--stenoses", type=int, default=0, help="stenoses (30–70%% diameter reduction) on synthetic trees")
    acq.add_argument("--aneurysms", type=int, default=0, help="saccular aneurysms on synthetic trees")
    acq.add_argument("--views", type=int, default=2, help="two-view: number of views")
    acq.add_argument("--side", choices=("left", "right", "both"), default="both", help="two-view: coronary tree")
    acq.add_argument("--count", type=int, default=16, help="pairs: number of pairs")
    acq.add_argument("--no-dicom", action="store_true", help="rotational: skip the DICOM XA copies")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed → same output)")


def job_from_args(a: argparse.Namespace) -> dict[str, Any]:
    return {"product": a.product, "sample": a.sample, "ct": None if a.ct is None else str(a.ct),
            "vessels": [str(v) for v in a.vessels], "vessel_source": a.vessel_source, "frames": a.frames,
            "arc_deg": a.arc, "duration_s": a.duration, "detector": a.detector, "det_spacing": a.det_spacing,
            "sad": a.sad, "sid": a.sid, "energy_kev": a.energy, "i0": a.i0, "blur_sigma_px": a.blur,
            "motion_deg": a.motion_deg, "motion_mm": a.motion_mm, "c_peak": a.c_peak, "velocity": a.velocity,
            "late_fraction": a.late_fraction, "branch_variability": a.branch_variability,
            "dicom_display": a.dicom_display, "scatter": a.scatter, "stenoses": a.stenoses,
            "aneurysms": a.aneurysms,
            "views": a.views, "side": a.side, "count": a.count, "dicom": not a.no_dicom, "seed": a.seed}


def _anatomy(job: dict[str, Any]) -> tuple[np.ndarray | None, Any, dict[str, np.ndarray] | None]:
    from ..formats.volume import read_volume

    if job.get("sample") and job.get("ct"):
        raise BadInput("give either --sample or --ct, not both")
    if job.get("sample"):
        from ..data import load_sample_ct

        return load_sample_ct(str(job["sample"]))
    if not job.get("ct"):
        if job.get("vessels"):
            raise BadInput("--vessels needs the CT it belongs to (--ct FILE)")
        return None, None, None
    hu, grid = read_volume(job["ct"])
    masks: dict[str, np.ndarray] = {}
    for v in job.get("vessels") or []:
        m, mg = read_volume(v)
        if m.shape != grid.shape or not np.allclose(mg.affine, grid.affine, atol=1e-3):
            raise BadInput(f"vessel file {v} is not on the grid of the CT {job['ct']} "
                           f"(shape {m.shape} vs {grid.shape}); resample it first")
        masks[Path(v).name.split(".")[0]] = m > 0
    lo, hi = float(hu.min()), float(hu.max())
    if lo >= -1.0 and hi <= 2.0:
        raise BadInput(f"CT {job['ct']} does not look like HU (values {lo:g}..{hi:g}; expected about "
                       f"-1000 for air, 0 for water); give the volume in Hounsfield units")
    return hu.astype(np.float32), grid, masks or None


def _declare(ctx: TaskContext, outs: list[tuple[str, str, str]]) -> None:
    for role, rel, desc in outs:
        ctx.add_output(role, rel, desc)


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    product = job.get("product")
    if product not in PRODUCTS:
        raise BadInput(f"unknown product {product!r}; use one of {', '.join(PRODUCTS)}")
    seed = int(job.get("seed", 0))
    ctx.progress(0.01, "load", "anatomy")
    hu, grid, masks = _anatomy(job)
    if product == "rotational":
        _rotational(job, ctx, hu, grid, masks, seed)
    elif product == "pairs":
        _pairs(job, ctx, hu, grid, masks, seed)
    else:
        _two_view(job, ctx, hu, grid, seed)


def _rotational(job: dict[str, Any], ctx: TaskContext, hu, grid, masks, seed: int) -> None:
    from ..simulation.contrast import BolusParams
    from ..simulation.products import RotationalConfig, simulate_rotational, write_rotational

    if hu is None:
        raise BadInput("rotational simulation needs a CT: --sample aorta_cta or --ct FILE")
    det = int(job.get("detector") or 256)
    bolus = BolusParams(t0=0.4, velocity=float(job.get("velocity") or 120.0), rise=1.2,
                        c_peak=float(job.get("c_peak") or 40.0), dispersion=0.003,
                        late_fraction=float(job.get("late_fraction") or 0.0),
                        branch_variability=float(job.get("branch_variability") or 0.0))
    cfg = RotationalConfig(frames=int(job.get("frames", 133)), arc_deg=float(job.get("arc_deg", 200.0)),
                           duration_s=float(job.get("duration_s", 4.4)), detector=(det, det),
                           det_spacing=job.get("det_spacing"), sad=float(job.get("sad", 750.0)),
                           sid=float(job.get("sid", 1200.0)), energy_kev=float(job.get("energy_kev", 65.0)),
                           i0=float(job.get("i0") or 1e5),
                           blur_sigma_px=float(0.5 if job.get("blur_sigma_px") is None else job["blur_sigma_px"]),
                           motion_deg=float(job.get("motion_deg", 0.0)), motion_mm=float(job.get("motion_mm", 0.0)),
                           bolus=bolus, dicom_display=str(job.get("dicom_display") or "raw"),
                           scatter_fraction=float(job.get("scatter") or 0.0),
                           stenoses=int(job.get("stenoses") or 0), aneurysms=int(job.get("aneurysms") or 0))
    source = job.get("vessel_source") or ("real" if masks else "synthetic")
    sim = ctx.reporter.stage("simulate", 0.02, 0.7)
    with ctx.timed("simulate"):
        result = simulate_rotational(hu, grid, masks, vessel_source=source, config=cfg, seed=seed,
                                     progress=lambda f, m: sim(f, m))
    ctx.log(f"rotational run: {cfg.frames} frames of {det}², max DSA {float(result.dsa.max()):.3f}, "
            f"{int(result.vessels.mask().sum())} vessel voxels")
    wr = ctx.reporter.stage("write", 0.7, 1.0)
    with ctx.timed("write"):
        outs = write_rotational(result, ctx.path, dicom=bool(job.get("dicom", True)), progress=lambda f, m: wr(f, m))
    _declare(ctx, outs)
    ctx.extra["simulation"] = {"product": "rotational", "vessel_source": source,
                               "det_spacing_mm": result.info["det_spacing"]}


def _pairs(job: dict[str, Any], ctx: TaskContext, hu, grid, masks, seed: int) -> None:
    from ..formats.volume import write_stack
    from ..simulation.pairs import PairGenerator
    from ..simulation.products import _json_default, _preview

    if hu is None:
        raise BadInput("pair simulation needs a CT: --sample aorta_cta or --ct FILE")
    count = int(job.get("count", 16))
    if count < 1:
        raise BadInput(f"--count must be ≥ 1, got {count}")
    det = int(job.get("detector") or 256)
    union = None
    if masks:
        union = np.zeros(grid.shape, bool)
        for m in masks.values():
            union |= m
    gen = PairGenerator(hu, grid, vessel_mask=union, detector=(det, det), seed=seed)
    items: dict[str, list[np.ndarray]] = {"fill": [], "mask": [], "dsa": [], "vessel_2d": []}
    metas = []
    with ctx.timed("simulate"):
        for i in range(count):
            ctx.progress(0.05 + 0.85 * i / count, "pairs", f"{i + 1}/{count}")
            s = gen.sample()
            for k in items:
                items[k].append(s[k])
            metas.append(s["meta"])
    for k, desc in (("fill", "noisy fill, log domain -ln(N/I0)"), ("mask", "noisy mask, log domain"),
                    ("dsa", "ideal noise-free iodine line integral (target)"), ("vessel_2d", "2D vessel mask")):
        arr = np.stack(items[k]).astype(np.uint8 if k == "vessel_2d" else np.float32)
        write_stack(ctx.path(f"pairs/{k}.nii.gz"), arr)
        ctx.add_output("images", f"pairs/{k}.nii.gz", f"{count} × {desc}")
    ctx.path("pairs/meta.json").write_text(json.dumps(metas, default=_json_default))
    ctx.add_output("truth", "pairs/meta.json", "per-pair pose, dose, energy, concentration, vessel source")
    idx = np.arange(min(count, 6))
    _preview(np.stack(items["dsa"]), idx, [f"pair {i}" for i in idx], ctx.path("preview/dsa_targets.png"),
             "DSA targets (iodine line integrals)")
    ctx.add_output("preview", "preview/dsa_targets.png", "first DSA targets")
    ctx.extra["simulation"] = {"product": "pairs", "count": count}


def _two_view(job: dict[str, Any], ctx: TaskContext, hu, grid, seed: int) -> None:
    from ..simulation.products import CoronaryConfig, simulate_coronary, write_coronary

    det = int(job.get("detector") or 512)
    cfg = CoronaryConfig(views=int(job.get("views", 2)), detector=(det, det),
                         energy_kev=float(job.get("energy_kev", 65.0)), i0=float(job.get("i0") or 5e4),
                         blur_sigma_px=float(0.7 if job.get("blur_sigma_px") is None else job["blur_sigma_px"]),
                         c_peak=float(job.get("c_peak") or 150.0), side=str(job.get("side", "both")),
                         dicom_display=str(job.get("dicom_display") or "raw"),
                         scatter_fraction=float(job.get("scatter") or 0.0),
                         stenoses=int(job.get("stenoses") or 0), aneurysms=int(job.get("aneurysms") or 0),
                         motion_mm=float(job.get("motion_mm") or 0.0), motion_deg=float(job.get("motion_deg") or 0.0))
    sim = ctx.reporter.stage("simulate", 0.02, 0.6)
    with ctx.timed("simulate"):
        views = simulate_coronary(hu, grid, config=cfg, seed=seed, progress=lambda f, m: sim(f, m))
    ctx.log(f"coronary views at (primary, secondary) = {views.info['angles_deg']}")
    wr = ctx.reporter.stage("write", 0.6, 1.0)
    with ctx.timed("write"):
        outs = write_coronary(views, ctx.path, progress=lambda f, m: wr(f, m))
    _declare(ctx, outs)
    ctx.extra["simulation"] = {"product": "two-view", "angles_deg": views.info["angles_deg"]}
