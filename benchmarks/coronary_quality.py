"""Two-view coronary reconstruction quality: every method side by side on simulated cases.

Cases: ``simulate_coronary`` (LCA/RCA-like trees, views 30–90° apart, SID 1000–1200 mm, SOD
750–800 mm, 512² at 0.25–0.3 mm), seeds FIRST..FIRST+N-1 (even right, odd left). Input masks
(``--segmentation``): ``learned`` (default, as in the ``coronary`` task) = the shipped U-Net segmentation of the simulated
angiogram, ``frangi`` = the Frangi + hysteresis segmentation (realistic errors: missed small
vessels, blobs at overlaps), ``noisy`` = the true 2D mask with boundary noise and
dropouts, ``truth`` = the exact 2D masks. Scores (``coronary.scoring``) against the true 3D lumen on
its 0.3 mm grid: Dice, true clDice, centerline Chamfer (sum of the two mean distances) and HD95,
connected components of the prediction, seconds per case. Targets for the default method:
Dice ≥ 0.75, clDice ≥ 0.85, Chamfer ≤ 2 mm, one component, ≤ 120 s per case on 2 CPU cores.
Per case it also prints the share of the fitted centerline whose depth the views leave open (within
10° of the epipolar planes) and, at the end, how that share correlates with clDice.

``--views 3`` simulates a third view of the same trees (the views' sampling changes with the
count, so the first two are not those of the two-view run) and scores the default method twice:
from all views and, as the paired peer ``autocar@2v``, from the case's first two views only. That
shows what a further projection does to the ghosts and open depths of two views.

The methods get the simulated log-domain images with the masks, as in the ``coronary`` task
(``autocar``'s ghost pruning weighs their vessel line integrals). ``--masks-only-peer`` also scores
the default method from the masks alone (row ``autocar-masks``), the same cases in the same run.
Every peer scored on the same cases gets a paired-difference line (mean ± s.e. over the cases).

``--peer LABEL:KEY=VALUE[,KEY=VALUE…]`` (repeatable) also scores the default method with the ghost
pruning's options (``graph.select_branches``) changed, as row LABEL on the same cases in the same run:
an ablation or a parameter change measured against the default with a paired difference, e.g.
``--peer greedy-only:exact_start=false`` or ``--peer support2:support_cost=2``.

``--refiner-peer WEIGHTS`` also scores the default method with another hull refiner checkpoint
(e.g. one just trained by ``coronary.train_refiner``) as row ``autocar-refiner``, paired the same way;
a missing or corrupt checkpoint is refused before the first case.

``--diagnose`` prints, per case, what became of the true centerline under the default method
(``truth_coverage``): the share a kept piece explains, and of the rest the share outside a view's
detector, outside a view's mask, followed by no candidate piece, or followed by a candidate the
ghost pruning did not keep. It tells losses of candidate generation from losses of the pruning.
A second line gives, per fate, the share of it whose depth two views leave open (within
AMBIGUOUS_DEG of every view pair's epipolar plane): the pruning loses true vessels most there.

``--further-view`` prints, per case, how much of the true centerline the views leave open (within
AMBIGUOUS_DEG of every epipolar plane) and how much would stay open with the further view the
``coronary`` task suggests (``epipolar.plan_further_view``, planned on the default's reconstruction).

``--pose-error DEG,MM`` also gives the default method the second view's geometry rotated by DEG
about a random axis through the region's centre and shifted MM in a random direction, and prints
its Dice without and with ``coronary.pose.refine_pose``, and the pose error (RMS px in view 2 of
the true tree). Rotation about the normal of the plane of both viewing directions and shifts along
the epipolar lines cannot be seen from two views, so part of a random error stays: the "floor" is
the error left by the best correction of the unknowns the refinement has (fitted to the truth).

    python benchmarks/coronary_quality.py --cases 4 --methods hull epipolar autocar
    python benchmarks/coronary_quality.py --cases 6 --methods autocar --pose-error 3,3
    python benchmarks/coronary_quality.py --cases 10 --methods autocar --peer no-support:support_cost=0
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from angiorecon.coronary.epipolar import (depth_ambiguous_length, epipolar_point_angle,  # noqa: E402
                                          open_depth_length, plan_further_view)
from angiorecon.coronary.graph import resample_polyline, select_branches  # noqa: E402
from angiorecon.coronary.hull import roi_grid  # noqa: E402
from angiorecon.coronary.methods import DEFAULT_METHOD, METHODS, reconstruct  # noqa: E402
from angiorecon.coronary.pose import move_view, observable_axes, refine_pose  # noqa: E402
from angiorecon.coronary.problem import CoronaryProblem  # noqa: E402
from angiorecon.coronary.scoring import score_occupancy, seen_by_every_view  # noqa: E402
from angiorecon.coronary.views import vessel_pixels_at_edge  # noqa: E402
from angiorecon.geometry import ConeBeamGeometry  # noqa: E402
from angiorecon.pipelines.coronary import AMBIGUOUS_DEG, EDGE_WARN_PX  # noqa: E402
from angiorecon.simulation.products import CoronaryConfig, simulate_coronary  # noqa: E402
from angiorecon.simulation.trees import VesselTree  # noqa: E402

#: with ``--views 3`` or more: the default method on the same case from its first two views only
TWO_VIEW_PEER = f"{DEFAULT_METHOD}@2v"
MASKS_ONLY_PEER = f"{DEFAULT_METHOD}-masks"
REFINER_PEER = f"{DEFAULT_METHOD}-refiner"
#: ``--diagnose``: the true centerline is sampled every DIAG_STEP_MM; a piece explains a sample within
#: max(its radius, EXPLAIN_MM)
DIAG_STEP_MM = 0.25
EXPLAIN_MM = 0.75
FATES = ("kept", "outside view", "outside mask", "no candidate", "not kept")
TARGETS = {"dice": 0.75, "cldice": 0.85, "chamfer_mm": 2.0, "components": 1, "seconds": 120.0}


def noisy_masks(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True masks with a wobbly boundary (±1 px) and a few dropped short stretches."""
    out = []
    for m in masks.astype(bool):
        noise = ndimage.gaussian_filter(rng.standard_normal(m.shape), 3.0)
        noise /= noise.std() + 1e-9
        grown, shrunk = ndimage.binary_dilation(m), ndimage.binary_erosion(m)
        k = np.where(noise > 0.8, grown, np.where(noise < -0.8, shrunk, m))
        for _ in range(4):                                   # drop short stretches of vessel
            pts = np.argwhere(m)
            y, x = pts[rng.integers(len(pts))]
            k[max(0, y - 3):y + 4, max(0, x - 3):x + 4] = False
        out.append(k)
    return np.stack(out).astype(np.float32)


@dataclass
class TruthFates:
    """What became of the true centerline (``--diagnose``), per fate of ``FATES``."""

    share: dict[str, float]         #: share of the true centerline (the shares add to 1)
    open_depth: dict[str, float]    #: share of that fate's part within AMBIGUOUS_DEG of the epipolar planes (NaN: none)


def truth_coverage(tree: VesselTree, geometry: ConeBeamGeometry, masks: np.ndarray, pieces: list[np.ndarray],
                   kept: list[int]) -> TruthFates:
    """The true centerline (``tree``, sampled every DIAG_STEP_MM) by what became of it (``FATES``, in order).

    A sample counts as *kept* when a kept piece explains it; otherwise as outside a view's
    detector, else outside a view's mask (> 1 px), else followed by *no candidate* piece, else
    by a candidate that was *not kept*. Each fate also says how much of it lies where the views
    leave the depth open (its local tangent within AMBIGUOUS_DEG of every view pair's epipolar plane).
    """
    true = [resample_polyline(tree.nodes[c], tree.radii[c], DIAG_STEP_MM)
            for c in tree.branch_polylines() if len(c) >= 2]
    p, reach = np.concatenate([t[0] for t in true]), np.maximum(np.concatenate([t[1] for t in true]), EXPLAIN_MM)
    open_depth = np.concatenate([epipolar_point_angle(t[0], geometry) for t in true]) < AMBIGUOUS_DEG

    def explained(curves: list[np.ndarray]) -> np.ndarray:
        if not curves:
            return np.zeros(len(p), dtype=bool)
        dense = [resample_polyline(np.asarray(c, dtype=np.float64), np.zeros(len(c)), DIAG_STEP_MM)[0] for c in curves]
        return cKDTree(np.concatenate(dense)).query(p)[0] <= reach

    uv = geometry.project_points(p)
    on_detector = seen_by_every_view(geometry, p)
    in_mask = np.ones(len(p), dtype=bool)
    for v, m in enumerate(np.asarray(masks) >= 0.5):
        to_mask = ndimage.distance_transform_edt(~m)
        in_mask &= ndimage.map_coordinates(to_mask, [uv[v, :, 1], uv[v, :, 0]], order=1, cval=np.inf) <= 1.0
    kept_mask = explained([pieces[i] for i in kept])
    fate = np.select([kept_mask, ~on_detector, ~in_mask, ~explained(list(pieces))], [0, 1, 2, 3], default=4)
    return TruthFates({name: float(np.mean(fate == k)) for k, name in enumerate(FATES)},
                      {name: float(open_depth[fate == k].mean()) if np.any(fate == k) else float("nan")
                       for k, name in enumerate(FATES)})


def truth_open_mm(tree: VesselTree, sources: np.ndarray) -> float:
    """Length (mm) of the true centerline within AMBIGUOUS_DEG of every epipolar plane of views at ``sources``."""
    return open_depth_length([tree.nodes[c] for c in tree.branch_polylines()], sources, AMBIGUOUS_DEG)


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values (NaN when there is none), without numpy's empty-slice warning."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _percent(share: float) -> str:
    """``share`` as a whole percentage; a dash for NaN (a fate no sample has)."""
    return "–" if np.isnan(share) else f"{share:.0%}"


def segmented_masks(views, method: str) -> np.ndarray:
    """The task's own 2D segmentation (``segment_views``) of the simulated angiogram (log domain)."""
    from angiorecon.coronary.segment2d import segment_views

    return segment_views(views, method)


#: ghost-pruning options a ``--peer`` may change: the scalar keyword options of ``select_branches``
PEER_OPTIONS = {name: p.default for name, p in inspect.signature(select_branches).parameters.items()
                if p.kind is p.KEYWORD_ONLY and isinstance(p.default, (bool, int, float))}


def peer_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``LABEL:KEY=VALUE[,KEY=VALUE…]`` → (label, options), each value of its default's type."""
    label, sep, body = text.partition(":")
    if not sep or not label or not body:
        raise argparse.ArgumentTypeError(f"--peer expects LABEL:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    options: dict[str, Any] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in PEER_OPTIONS:
            raise argparse.ArgumentTypeError(f"--peer {text!r}: {item!r} is not KEY=VALUE with KEY one of "
                                             f"{', '.join(sorted(PEER_OPTIONS))}")
        kind = type(PEER_OPTIONS[key])
        try:
            if kind is bool:
                if value.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                options[key] = value.strip().lower() in ("true", "1")
            else:
                options[key] = int(value) if kind is int else float(value)
        except ValueError:
            expected = {bool: "true or false", int: "an integer"}.get(kind, "a number")
            raise argparse.ArgumentTypeError(f"--peer {text!r}: {key} expects {expected}, got {value!r}") from None
    return label, options


def pose_error(text: str) -> tuple[float, float]:
    """``DEG,MM`` → (degrees, millimetres)."""
    try:
        deg, mm = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pose-error expects DEG,MM (e.g. 3,3), got {text!r}") from None
    return deg, mm


def perturb_second_view(geometry, deg: float, mm: float, centre: np.ndarray, rng: np.random.Generator):
    """View 2 rotated by ``deg`` about a random axis through ``centre`` and shifted ``mm`` in a random direction."""
    axis, shift = rng.standard_normal(3), rng.standard_normal(3)
    return move_view(geometry, 1, np.deg2rad(deg) * axis / np.linalg.norm(axis), mm * shift / np.linalg.norm(shift),
                     centre)


def pose_rows(views, masks: np.ndarray, voxel: float, deg: float, mm: float, seed: int) -> dict[str, float]:
    """Default method's Dice on the perturbed and the refined geometry, and view 2's pose error (px)."""
    true = views.geometry
    centre = roi_grid(true, masks, spacing=voxel).center
    wrong = perturb_second_view(true, deg, mm, centre, np.random.default_rng(5000 + seed))
    nodes = views.tree.nodes

    def error_px(g) -> float:
        return float(np.sqrt(np.mean(np.sum((g.project_points(nodes)[1] - true.project_points(nodes)[1]) ** 2, 1))))

    d, n, m = observable_axes(wrong, 1)

    def best(p: np.ndarray) -> np.ndarray:    # the same unknowns as refine_pose, fitted to the truth
        g = move_view(wrong, 1, np.deg2rad(p[0]) * d + np.deg2rad(p[1]) * m, p[2] * n, centre)
        return (g.project_points(nodes)[1] - true.project_points(nodes)[1]).ravel()

    floor = float(np.sqrt(2 * np.mean(least_squares(best, np.zeros(3)).fun ** 2)))
    t0 = time.perf_counter()
    fixed = refine_pose(wrong, masks, centre).apply(wrong)
    out = {"refine_s": time.perf_counter() - t0, "err_before": error_px(wrong), "err_after": error_px(fixed),
           "err_floor": floor}
    for key, g in (("dice_perturbed", wrong), ("dice_refined", fixed)):
        grid = roi_grid(g, masks, spacing=voxel)
        res = reconstruct(CoronaryProblem(g, masks, grid, views.images), DEFAULT_METHOD, seed=seed)
        out[key] = score_occupancy(res.occupancy, res.grid, views.vessels.mask(), views.vessels.grid)["dice"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--first", type=int, default=0,
                    help="seed of the first case (e.g. --first 6 scores seeds the defaults were not looked at on)")
    ap.add_argument("--methods", nargs="+", default=["hull", "epipolar", "autocar", "neca", "sdfcar"],
                    choices=list(METHODS))
    ap.add_argument("--segmentation", "--masks", dest="masks", choices=("learned", "frangi", "noisy", "truth"),
                    default="learned", help="2D masks the methods get (default: the task's default, learned)")
    ap.add_argument("--views", type=int, default=2,
                    help="views per case (default 2; 3 shows what a further view does to the two-view ghosts)")
    ap.add_argument("--voxel", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ct", metavar="SAMPLE",
                    help="simulate the views through a shipped CT instead of the smooth chest ellipse: pulmonary_cta "
                         "(held out from the 2D segmenter's training) or aorta_cta (one of its training backgrounds)")
    ap.add_argument("--masks-only-peer", action="store_true",
                    help=f"also score {DEFAULT_METHOD} without the images (ghost pruning from the masks alone)")
    ap.add_argument("--peer", type=peer_spec, action="append", default=[], metavar="LABEL:KEY=VALUE[,...]",
                    help=f"also score {DEFAULT_METHOD} with these ghost-pruning options (graph.select_branches) as "
                         "row LABEL; repeatable")
    ap.add_argument("--refiner-peer", type=Path, metavar="WEIGHTS",
                    help=f"also score {DEFAULT_METHOD} with this hull refiner checkpoint as row {REFINER_PEER}")
    ap.add_argument("--diagnose", action="store_true",
                    help=f"also print, per case, what became of the true centerline under {DEFAULT_METHOD} "
                         "(kept / outside a view / outside a mask / no candidate / candidate not kept)")
    ap.add_argument("--further-view", action="store_true",
                    help=f"also print, per case, how much of the true centerline two views leave open and how much "
                         f"the further view {DEFAULT_METHOD}'s task suggests (planned on its reconstruction) would")
    ap.add_argument("--pose-error", type=pose_error, metavar="DEG,MM",
                    help="also score the default method with view 2's geometry off by DEG degrees and MM mm, "
                         "without and with pose refinement")
    args = ap.parse_args(argv)
    if args.views < 2:
        ap.error(f"--views needs at least 2 (the depth comes from where views intersect), got {args.views}")
    torch.set_num_threads(args.threads)
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
    paired = args.views > 2 and DEFAULT_METHOD in args.methods
    if paired:
        rows[TWO_VIEW_PEER] = []
    masks_only = args.masks_only_peer and DEFAULT_METHOD in args.methods
    if masks_only:
        rows[MASKS_ONLY_PEER] = []
    if (args.peer or args.refiner_peer) and DEFAULT_METHOD not in args.methods:
        ap.error(f"--peer and --refiner-peer change {DEFAULT_METHOD}: add {DEFAULT_METHOD} to --methods")
    peers = {label: {"selection": options} for label, options in args.peer}
    clash = set(peers) & (set(rows) | {TWO_VIEW_PEER, MASKS_ONLY_PEER, REFINER_PEER})
    if clash or len(peers) < len(args.peer):
        ap.error(f"--peer labels must be unique and differ from the method rows, got {[lb for lb, _ in args.peer]}")
    if args.refiner_peer:
        from angiorecon.coronary.refine import load_refiner
        from angiorecon.errors import BadInput

        try:                                      # checked once here, not as a FAILED row per case
            load_refiner(args.refiner_peer)
        except FileNotFoundError:
            ap.error(f"--refiner-peer {args.refiner_peer}: no such file")
        except BadInput as exc:
            ap.error(f"--refiner-peer {exc}")
        peers[REFINER_PEER] = {"refiner_weights": args.refiner_peer}
    for label in peers:
        rows[label] = []
    pose: list[dict[str, float]] = []
    fates: list[TruthFates] = []            # --diagnose: the default's truth_coverage per case
    further: list[tuple[float, float]] = []  # --further-view: true open depth (mm) without and with it
    in_view: list[dict[str, float]] = []     # the default method scored where every view sees
    edge_vs_seen: list[tuple[bool, bool]] = []  # (the task warns of vessels at a detector edge, lumen all seen)
    print(f"# coronary_quality: {args.cases} cases from seed {args.first}, {args.views} views, "
          f"background {args.ct or 'chest ellipse'}, "
          f"segmentation={args.masks}, voxel {args.voxel} mm, {args.threads} threads, default method {DEFAULT_METHOD}")
    print(f"{'case':>10} {'method':>9} {'dice':>6} {'cldice':>6} {'chamf':>6} {'hd95':>6} {'cc':>4} {'sec':>6}"
          "   (seen: share of the true lumen inside every view's field of view; edge: vessel-mask pixels at "
          f"each view's border, the task warns from {EDGE_WARN_PX}; ambiguous: share of the fitted centerline within "
          f"{AMBIGUOUS_DEG:g}° of the epipolar planes, whose depth the views leave open)")
    background: tuple[Any, ...] = ()
    if args.ct:
        from angiorecon.ddsa.sources import load_ct
        from angiorecon.errors import BadInput

        try:
            background = load_ct(args.ct)[:2]
        except BadInput as exc:
            ap.error(f"--ct {args.ct}: {exc}")
    for c in range(args.first, args.first + args.cases):
        side = "right" if c % 2 == 0 else "left"
        views = simulate_coronary(*background, config=CoronaryConfig(side=side, views=args.views), seed=c)
        rng = np.random.default_rng(1000 + c)
        masks = {"truth": lambda: views.masks_2d.astype(np.float32), "noisy": lambda: noisy_masks(views.masks_2d, rng),
                 "frangi": lambda: segmented_masks(views, "frangi"),
                 "learned": lambda: segmented_masks(views, "learned")}[args.masks]()
        pair_deg = np.asarray(views.info["separation_deg"])
        closest = float(pair_deg[np.triu_indices(len(pair_deg), 1)].min())     # separation of the closest views
        truth = views.vessels.mask()
        lumen = views.vessels.grid.index_to_world(np.argwhere(truth)[:, ::-1])
        seen_share = float(seen_by_every_view(views.geometry, lumen).mean())
        edge = vessel_pixels_at_edge(masks)
        edge_vs_seen.append((max(edge) >= EDGE_WARN_PX, seen_share == 1.0))
        # (row, method, views, their masks and images, lumen share they all see, separation of their closest pair)
        images = views.images
        runs = [(name, name, views.geometry, masks, images, seen_share, closest, {}) for name in args.methods]
        runs += [(label, DEFAULT_METHOD, views.geometry, masks, images, seen_share, closest, options)
                 for label, options in peers.items()]
        if paired:
            first_two = views.geometry.subset([0, 1])
            runs.append((TWO_VIEW_PEER, DEFAULT_METHOD, first_two, masks[:2], images[:2],
                         float(seen_by_every_view(first_two, lumen).mean()), float(pair_deg[0, 1]), {}))
        if masks_only:
            runs.append((MASKS_ONLY_PEER, DEFAULT_METHOD, views.geometry, masks, None, seen_share, closest, {}))
        for label, name, geometry, view_masks, view_images, seen, sep, options in runs:
            record: dict[str, Any] = {}
            if args.diagnose and label == DEFAULT_METHOD:
                options = {**options, "record": record}
            t0 = time.perf_counter()
            try:
                grid = roi_grid(geometry, view_masks, spacing=args.voxel)
                res = reconstruct(CoronaryProblem(geometry, view_masks, grid, view_images), name, seed=c, **options)
            except Exception as exc:  # noqa: BLE001 - a failing method is a row, not a crash
                print(f"{side[0]}{c:>2} {sep:4.0f}° {label:>9} FAILED {type(exc).__name__}: {str(exc)[:80]}")
                continue
            secs = time.perf_counter() - t0
            s = score_occupancy(res.occupancy, res.grid, truth, views.vessels.grid)
            s["seconds"] = secs
            s["case"] = c
            notes = ""
            if res.tree is not None and res.tree.total_length > 0:
                s["ambiguous"] = depth_ambiguous_length(res.tree, geometry, AMBIGUOUS_DEG) / res.tree.total_length
                notes = f"  ambiguous {s['ambiguous']:.0%}"
            won = res.info.get("selection", {}).get("search_start")
            notes += f"  start {won}" if won else ""
            rows[label].append(s)
            print(f"{side[0]}{c:>2} {sep:4.0f}° {label:>9} {s['dice']:6.3f} {s['cldice']:6.3f} {s['chamfer_mm']:6.2f} "
                  f"{s['hd95_mm']:6.2f} {s['components']:4d} {secs:6.1f}   seen {seen:.1%}  "
                  f"edge {'/'.join(map(str, edge[:len(view_masks)]))}{notes}", flush=True)
            if label == DEFAULT_METHOD:
                s_in = s if seen_share == 1.0 else score_occupancy(res.occupancy, res.grid, truth,
                                                                    views.vessels.grid, seen_by=views.geometry)
                in_view.append(s_in)
                if s_in is not s:
                    print(f"{'':>10} {'in view':>9} {s_in['dice']:6.3f} {s_in['cldice']:6.3f} "
                          f"{s_in['chamfer_mm']:6.2f} {s_in['hd95_mm']:6.2f}   (scored inside every view's field "
                          "of view only)", flush=True)
            if record:
                fates.append(truth_coverage(views.tree, geometry, view_masks, record["pieces"], record["kept"]))
                print(f"{'':>10} {'truth':>9} " + "  ".join(f"{k} {x:.1%}" for k, x in fates[-1].share.items())
                      + "   (share of the true centerline)", flush=True)
                print(f"{'':>10} {'open':>9} " + "  ".join(f"{k} {_percent(x)}" for k, x in fates[-1].open_depth.items())
                      + f"   (share of each within {AMBIGUOUS_DEG:g}° of the epipolar planes)", flush=True)
            if args.further_view and label == DEFAULT_METHOD and res.tree is not None and res.tree.branches:
                plan = plan_further_view([b.points for b in res.tree.branches], geometry, AMBIGUOUS_DEG)
                opened = (truth_open_mm(views.tree, geometry.source),
                          truth_open_mm(views.tree, np.vstack([geometry.source, plan.source_mm])))
                further.append(opened)
                print(f"{'':>10} {'further':>9} {plan.label()}: the true centerline open {opened[0]:.0f} mm with "
                      f"the views, {opened[1]:.0f} mm with it (on the reconstruction {plan.open_mm_now:.0f} → "
                      f"{plan.open_mm:.0f} mm)", flush=True)
            if args.pose_error and label == DEFAULT_METHOD:
                p = pose_rows(views, masks, args.voxel, *args.pose_error, seed=c)
                p["dice_exact"] = s["dice"]
                pose.append(p)
                print(f"{side[0]}{c:>2} {sep:4.0f}° {'pose':>9} view 2 off {p['err_before']:.1f} px -> "
                      f"{p['err_after']:.1f} px (two-view floor {p['err_floor']:.1f}, {p['refine_s']:.1f} s); "
                      f"Dice perturbed {p['dice_perturbed']:.3f}, refined {p['dice_refined']:.3f}, "
                      f"exact {s['dice']:.3f}", flush=True)
    print("# mean over cases (± s.e.)")
    for name, rs in rows.items():
        if not rs:
            continue

        def ms(k: str) -> str:
            v = np.array([r[k] for r in rs], dtype=float)
            return f"{v.mean():.3f}±{v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0:.3f}"

        cc1 = np.mean([r["components"] == 1 for r in rs])
        print(f"{name:>9}: dice {ms('dice')}  cldice {ms('cldice')}  chamfer {ms('chamfer_mm')} mm  "
              f"hd95 {ms('hd95_mm')} mm  one-component {cc1:.0%}  {ms('seconds')} s/case  (n={len(rs)})")
    if fates:
        print(f"# {DEFAULT_METHOD}: the true centerline, mean over {len(fates)} cases: "
              + "  ".join(f"{k} {np.mean([f.share[k] for f in fates]):.1%}" for k in FATES))
        print(f"# {DEFAULT_METHOD}: share within {AMBIGUOUS_DEG:g}° of the epipolar planes, mean over the cases that "
              "have the fate: " + "  ".join(f"{k} {_percent(_nanmean([f.open_depth[k] for f in fates]))}" for k in FATES))
    if further:
        now, then = np.mean(further, axis=0)
        print(f"# {DEFAULT_METHOD}: the true centerline open (within {AMBIGUOUS_DEG:g}° of the epipolar planes), mean "
              f"over {len(further)} cases: {now:.1f} mm with the views, {then:.1f} mm with the suggested further view")
    if in_view:
        mean = {k: float(np.mean([r[k] for r in in_view])) for k in ("dice", "cldice", "chamfer_mm", "hd95_mm")}
        print(f"# {DEFAULT_METHOD} inside every view's field of view (what the views can reconstruct): "
              f"dice {mean['dice']:.3f}  cldice {mean['cldice']:.3f}  chamfer {mean['chamfer_mm']:.3f} mm  "
              f"hd95 {mean['hd95_mm']:.3f} mm")
    amb = [(r["ambiguous"], r["cldice"]) for r in rows.get(DEFAULT_METHOD, []) if "ambiguous" in r]
    if len(amb) > 2:
        a, cl = np.array(amb).T
        spread = a.std() > 0 and cl.std() > 0          # no correlation when every case has the same share
        corr = f"correlation with clDice {np.corrcoef(a, cl)[0, 1]:+.2f}" if spread else "no spread to correlate"
        print(f"# {DEFAULT_METHOD}: share of the centerline within {AMBIGUOUS_DEG:g}° of the epipolar planes "
              f"(depth left open by the views) median {np.median(a):.0%}, range {a.min():.0%}-{a.max():.0%}; {corr}")
    warned_out = sum(w and not a for w, a in edge_vs_seen)
    warned_all = sum(w and a for w, a in edge_vs_seen)
    n_out = sum(not a for _w, a in edge_vs_seen)
    print(f"# detector-edge warning (>= {EDGE_WARN_PX} px): {warned_out} of {n_out} cases with lumen outside a field "
          f"of view, {warned_all} of {len(edge_vs_seen) - n_out} cases without")
    if pose:
        mean = {k: float(np.mean([p[k] for p in pose])) for k in pose[0]}
        deg, mm = args.pose_error
        print(f"# pose error {deg:g}°,{mm:g} mm on view 2 ({DEFAULT_METHOD}, n={len(pose)}): "
              f"Dice without refinement {mean['dice_perturbed']:.3f}, with {mean['dice_refined']:.3f} "
              f"(exact geometry {mean['dice_exact']:.3f}); view 2 error {mean['err_before']:.1f} -> "
              f"{mean['err_after']:.1f} px (floor {mean['err_floor']:.1f} px: the part two views cannot tell); "
              f"refinement {mean['refine_s']:.1f} s/case")
    d = rows.get(DEFAULT_METHOD, [])
    for name, rs in rows.items():   # the default against each peer measured in this run
        if d and rs and name != DEFAULT_METHOD:
            mean = lambda rr, k: float(np.mean([r[k] for r in rr]))  # noqa: E731
            print(f"# {DEFAULT_METHOD}/{name}: Dice {mean(d, 'dice') / max(mean(rs, 'dice'), 1e-9):.2f}x, "
                  f"clDice {mean(d, 'cldice') / max(mean(rs, 'cldice'), 1e-9):.2f}x, "
                  f"time {mean(d, 'seconds') / max(mean(rs, 'seconds'), 1e-9):.2f}x")
            peer = {r["case"]: r for r in rs}
            pairs = [(a, peer[a["case"]]) for a in d if a["case"] in peer]     # cases both scored
            if len(pairs) > 1:
                def diff(k: str) -> str:
                    x = np.array([a[k] - b[k] for a, b in pairs])
                    return f"{x.mean():+.4f}±{x.std(ddof=1) / np.sqrt(len(x)):.4f}"
                up = sum(a["cldice"] > b["cldice"] for a, b in pairs)
                down = sum(a["cldice"] < b["cldice"] for a, b in pairs)
                print(f"#   paired {DEFAULT_METHOD} − {name} (n={len(pairs)}): dice {diff('dice')}, cldice "
                      f"{diff('cldice')} (higher in {up}, lower in {down}), chamfer {diff('chamfer_mm')} mm")
    if d:
        met = {"dice": np.mean([r["dice"] for r in d]) >= TARGETS["dice"],
               "cldice": np.mean([r["cldice"] for r in d]) >= TARGETS["cldice"],
               "chamfer": np.mean([r["chamfer_mm"] for r in d]) <= TARGETS["chamfer_mm"],
               "one tree": all(r["components"] == 1 for r in d),
               "time": max(r["seconds"] for r in d) <= TARGETS["seconds"]}
        scope = "" if args.views == 2 else f" with {args.views} views (the targets are set for two)"
        print(f"# default ({DEFAULT_METHOD}) targets met{scope}: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                                                               for k, v in met.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
