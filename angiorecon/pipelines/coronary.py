"""``coronary``: 3D coronary arteries from two (or a few) angiographic views.

Views (XA DICOM, or PNG/NIfTI + JSON sidecar) → 2D vessel probability (Frangi, the learned
segmenter, or user masks) → a 3D method from ``coronary.methods`` → occupancy volume, vessel mask,
mesh, centerline tree with radii, reprojection overlays per view, reprojection Dice and, with a
reference (a ``simulate two-view`` folder, a mask volume or a mesh), 3D scores.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..worker import TaskContext

HELP = "3D coronary tree from two or more angiographic views (hull, epipolar, AutoCAR-style graph, fields)"

SEGMENTATIONS = ("learned", "frangi", "masks")
#: the shipped U-Net beats Frangi on simulated views and on the real XCA test set, and its masks give
#: better 3D trees (benchmarks/coronary_segmentation.py, benchmarks/coronary_quality.py)
DEFAULT_SEGMENTATION = "learned"
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MESH_SUFFIXES = (".vtp", ".vtk", ".stl", ".ply", ".obj")
#: warn when this many vessel-mask pixels of a view touch its border (34 simulated cases: the 16 with
#: lumen outside a field of view have 14–361, 17 of the other 18 have 0)
EDGE_WARN_PX = 10
#: centerline within this angle of every view pair's epipolar plane counts as depth-ambiguous
AMBIGUOUS_DEG = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..coronary.methods import DEFAULT_METHOD, METHODS

    p.add_argument("views", nargs="+", type=Path, help="one file per view: XA DICOM, or PNG/NIfTI with a JSON sidecar")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--frames", type=int, nargs="+", help="0-based frame index per view (multi-frame runs)")
    sel.add_argument("--match-phase", action="store_true", help="pick frames at the same cardiac phase")
    p.add_argument("--sidecar", type=Path, nargs="+", help="JSON geometry sidecar per view (image inputs)")
    p.add_argument("--segmentation", choices=SEGMENTATIONS, default=DEFAULT_SEGMENTATION,
                   help="2D vessel segmentation: learned = shipped U-Net (default), frangi = Hessian + hysteresis")
    p.add_argument("--masks", type=Path, nargs="+",
                   help="vessel mask per view (or one [views, rows, cols] stack); implies --segmentation masks")
    p.add_argument("--method", default="default", choices=["default", *METHODS],
                   help=f"3D method (default: {DEFAULT_METHOD})")
    p.add_argument("--voxel", type=float, help="voxel size of the reconstruction grid, mm (default 0.5)")
    p.add_argument("--refine-pose", action="store_true",
                   help="correct the secondary views' roll, tilt and sideways shift (a few degrees / mm of "
                        "DICOM geometry error) by matching the views' epipolar crossing profiles")
    p.add_argument("--no-intensity", action="store_true",
                   help="prune ghost branches from the masks alone; by default autocar also compares the images' "
                        "vessel line integrals (which add up where vessels overlap) with the kept branches (turn it "
                        "off for images that are not log-domain attenuation, e.g. heavily post-processed exports)")
    p.add_argument("--reference", type=Path, help="truth: a `simulate two-view` folder, a mask volume or a mesh")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    frames = args.frames or [0] * len(args.views)
    if args.frames and len(args.frames) != len(args.views):
        raise BadInput(f"{len(args.frames)} frame indices for {len(args.views)} views; give one per view")
    job: dict[str, Any] = {
        "views": [{"path": str(p), "frame": int(f)} for p, f in zip(args.views, frames)],
        "frame_selection": "cardiac-phase" if args.match_phase else "index",
        "segmentation": "masks" if args.masks else args.segmentation,
        "method": args.method,
        "device": args.device,
    }
    if args.masks:
        job["masks"] = [str(m) for m in args.masks]
    if args.sidecar:
        job["sidecars"] = [str(s) for s in args.sidecar]
    if args.voxel is not None:
        job["voxel_mm"] = float(args.voxel)
    if args.refine_pose:
        job["refine_pose"] = True
    if args.no_intensity:
        job["intensity"] = False
    if args.reference is not None:
        job["reference"] = str(args.reference)
    return job


# ----------------------------------------------------------------------------- inputs
def _validate(job: dict[str, Any]) -> None:
    views = job.get("views")
    if not isinstance(views, list) or len(views) < 2:
        got = f"got {len(views)}" if isinstance(views, list) else f"got {type(views).__name__}"
        raise BadInput(f"coronary needs at least two views, {got}: the depth comes from where they intersect "
                       "(give two or more view files; a job lists them as 'views': [{'path': ..., 'frame': ...}, ...])")
    for i, v in enumerate(views):
        if not isinstance(v, dict) or "path" not in v:
            raise BadInput(f"job view {i + 1} must be an object with 'path' (and 'frame')")
        if not Path(v["path"]).is_file():
            raise BadInput(f"view {i + 1}: {v['path']} does not exist")
    if job.get("segmentation", DEFAULT_SEGMENTATION) not in SEGMENTATIONS:
        raise BadInput(f"segmentation must be one of {', '.join(SEGMENTATIONS)}, got {job.get('segmentation')!r}")
    if job.get("frame_selection", "index") not in ("index", "cardiac-phase"):
        raise BadInput(f"frame_selection must be 'index' or 'cardiac-phase', got {job.get('frame_selection')!r}")
    vox = job.get("voxel_mm")
    if vox is not None and not 0.05 <= float(vox) <= 5.0:
        raise BadInput(f"voxel_mm must be between 0.05 and 5 mm, got {vox}")
    if job.get("segmentation") == "masks" and not job.get("masks"):
        raise BadInput("segmentation 'masks' needs 'masks': one mask file per view")
    for key, default in (("refine_pose", False), ("intensity", True)):
        if not isinstance(job.get(key, default), bool):
            raise BadInput(f"{key} must be true or false, got {job.get(key)!r}")


def _masks(job: dict[str, Any], loaded: Any, device: str) -> np.ndarray:
    from ..coronary.segment2d import segment_views

    shape = loaded.images.shape
    masks = job.get("masks")
    if masks and len(masks) == 1 and shape[0] > 1:        # one [views, rows, cols] stack
        from ..coronary.views import read_stack_file

        m = read_stack_file(masks[0]).astype(np.float32)
        if m.shape != shape:
            raise BadInput(f"mask stack {masks[0]} is {list(m.shape)} but the views are {list(shape)} "
                           "(give one mask per view or a [views, rows, cols] stack)")
        hi = float(m.max())
        if hi <= 0:
            raise BadInput(f"mask stack {masks[0]} is empty")
        return np.clip(m / hi if hi > 1 else m, 0, 1)
    return segment_views(loaded, job.get("segmentation", DEFAULT_SEGMENTATION), masks, device=device)


def _reference(path: Path) -> tuple[str, Any]:
    """('mask', (array, grid)) or ('mesh', (vertices, faces)) from a truth folder, mask volume or mesh."""
    from ..formats.volume import read_volume

    if path.is_dir():
        for rel in ("truth/vessel_mask.nii.gz", "vessel_mask.nii.gz"):
            if (path / rel).is_file():
                arr, grid = read_volume(path / rel)
                return "mask", (np.asarray(arr) > 0, grid)
        raise BadInput(f"reference folder {path} has no truth/vessel_mask.nii.gz (expected a `simulate two-view` "
                       "output folder)")
    if not path.is_file():
        raise BadInput(f"reference {path} does not exist")
    name = path.name.lower()
    if name.endswith(VOLUME_SUFFIXES):
        arr, grid = read_volume(path)
        arr = np.asarray(arr)
        if not (arr > 0).any():
            raise BadInput(f"reference mask {path} is empty")
        return "mask", (arr > (0.5 if arr.max() <= 1 else 0), grid)
    if name.endswith(MESH_SUFFIXES):
        from ..formats.mesh import read_mesh

        v, f, _ = read_mesh(path)
        if len(f) == 0:
            raise BadInput(f"reference mesh {path} has no triangles")
        return "mesh", (v, f)
    raise BadInput(f"reference {path.name!r}: expected a truth folder, a mask volume ({', '.join(VOLUME_SUFFIXES)}) "
                   f"or a mesh ({', '.join(MESH_SUFFIXES)})")


# ----------------------------------------------------------------------------- outputs
def reprojection(occupancy: np.ndarray, grid: Any, geometry: Any) -> np.ndarray:
    """Binary silhouettes [V, H, W] of the reconstructed lumen (chord > half a voxel)."""
    from ..operators import forward_project

    chord = forward_project((occupancy >= 0.5).astype(np.float32), grid, geometry)
    return chord > 0.5 * float(grid.spacing.min())


def _dice2d(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def _overlay(path: Path, image: np.ndarray, mask: np.ndarray, rendered: np.ndarray, title: str,
             ambiguous_uv: np.ndarray) -> None:
    """Measured image with the mask, and the reprojection with the depth-ambiguous centerline points
    ``ambiguous_uv`` (K, 2) (col, row) marked: there the views leave the depth open."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 5.3))
    lo, hi = np.percentile(image, [1, 99.5])
    for a in ax:
        a.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        a.axis("off")
    ax[0].set_title("measured + input mask (green)")
    ax[0].contour(mask, levels=[0.5], colors="lime", linewidths=0.6)
    ax[1].set_title("reprojected reconstruction (red) vs mask (green)")
    ax[1].contour(mask, levels=[0.5], colors="lime", linewidths=0.6)
    ax[1].contour(rendered.astype(np.float32), levels=[0.5], colors="red", linewidths=0.6)
    h, w = image.shape
    uv = ambiguous_uv[(ambiguous_uv[:, 0] >= 0) & (ambiguous_uv[:, 0] <= w - 1) & (ambiguous_uv[:, 1] >= 0)
                      & (ambiguous_uv[:, 1] <= h - 1)]          # off-detector points would widen the axes
    if len(uv):
        ax[1].scatter(uv[:, 0], uv[:, 1], s=4, c="magenta", linewidths=0,
                      label=f"depth not fixed by the views (< {AMBIGUOUS_DEG:g}° from an epipolar plane)")
        ax[1].legend(loc="lower left", fontsize=7, markerscale=3, framealpha=0.6)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..coronary.hull import roi_grid
    from ..coronary.methods import DEFAULT_METHOD, METHODS, reconstruct
    from ..coronary.problem import CoronaryProblem
    from ..coronary.views import load_views, vessel_pixels_at_edge
    from ..formats.volume import write_volume

    _validate(job)
    method = job.get("method", "default")
    name = DEFAULT_METHOD if method == "default" else method
    if name not in METHODS:
        raise BadInput(f"unknown coronary method {method!r}; choose default or one of {', '.join(METHODS)}")
    device = ctx.device
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ctx.progress(0.0, "load", f"{len(job['views'])} views")
    phase = job.get("frame_selection", "index") == "cardiac-phase"
    frames = None if phase else [int(v.get("frame", 0)) for v in job["views"]]
    loaded = load_views([v["path"] for v in job["views"]], frames, match_phase=phase, sidecars=job.get("sidecars"))
    ctx.log(f"views: frames {loaded.frames}, detector {loaded.images.shape[1:]}")
    ctx.progress(0.05, "segment", job.get("segmentation", DEFAULT_SEGMENTATION))
    masks = _masks(job, loaded, device)
    timings["load_segment_s"] = time.perf_counter() - t0
    at_edge = vessel_pixels_at_edge(masks)
    for v, n in enumerate(at_edge):
        if n >= EDGE_WARN_PX:
            ctx.log(f"view {v + 1}: vessels run off the detector edge ({n} mask pixels at the border); the parts "
                    "outside its field of view cannot be reconstructed from these views, and the other views' "
                    "images of them may be matched to ghost branches", level="warning")
    voxel = float(job.get("voxel_mm", 0.5))
    geometry = loaded.geometry
    grid = roi_grid(geometry, masks, spacing=voxel)
    pose: dict[str, Any] | None = None
    if job.get("refine_pose"):
        from ..coronary.pose import refine_pose

        ctx.progress(0.08, "pose", "refining the secondary views' pose")
        t_pose = time.perf_counter()
        correction = refine_pose(geometry, masks, grid.center)
        geometry = correction.apply(geometry)
        grid = roi_grid(geometry, masks, spacing=voxel)
        pose = correction.summary()
        timings["pose_s"] = time.perf_counter() - t_pose
        ctx.log("pose correction: " + ", ".join(f"view {v}: {c['rotation_deg']:.2f}° and "
                                                f"{np.linalg.norm(c['translation_mm']):.2f} mm"
                                                for v, c in pose["views"].items()))
    ctx.log(f"grid {grid.shape} at {voxel} mm")
    # the images go to the methods unless switched off: autocar's ghost pruning weighs their line integrals
    images = loaded.images if job.get("intensity", True) else None
    problem = CoronaryProblem(geometry, masks, grid, images, {"sources": loaded.sources})
    t1 = time.perf_counter()
    result = reconstruct(problem, name, device=device,
                         progress=lambda f, m: ctx.progress(0.1 + 0.6 * f, name, m))
    timings["reconstruct_s"] = time.perf_counter() - t1

    ctx.progress(0.72, "write", "volume, mask, mesh, centerlines")
    write_volume(ctx.path("coronary_occupancy.nii.gz"), result.occupancy.astype(np.float32), result.grid)
    ctx.add_output("volume", "coronary_occupancy.nii.gz", f"{name}: lumen occupancy in [0, 1]")
    lumen = result.mask()
    write_volume(ctx.path("coronary_mask.nii.gz"), lumen.astype(np.uint8), result.grid)
    ctx.add_output("vessel_mask", "coronary_mask.nii.gz", "coronary lumen mask (occupancy ≥ 0.5)")
    if lumen.any():
        from ..vessels.surface import volume_to_mesh

        volume_to_mesh(result.occupancy, result.grid, 0.5, smooth=True).write(ctx.path("coronary_mesh.vtp"))
        ctx.add_output("mesh", "coronary_mesh.vtp", "coronary lumen surface (LPS mm)")
    tree = result.tree
    if tree is None and lumen.any():
        from ..vessels.centerlines import extract_centerlines

        tree = extract_centerlines(lumen, result.grid)
    angles: list[np.ndarray] = []
    if tree is not None and tree.branches:
        from ..coronary.epipolar import epipolar_point_angle

        angles = [epipolar_point_angle(b.points, geometry) for b in tree.branches]
        tree.write_markups(ctx.path("centerlines.mrk.json"), "Coronary",
                           point_values={"EpipolarAngle": ("deg", angles)})
        ctx.add_output("centerlines", "centerlines.mrk.json",
                       "centerline curves with Radius and EpipolarAngle (markups)")
        tree.write_vtp(ctx.path("centerlines.vtp"), point_values={"EpipolarAngle": angles})
        ctx.add_output("centerlines", "centerlines.vtp", "centerline polylines with Radius and EpipolarAngle (VTP)")

    ctx.progress(0.8, "reproject", "overlays")
    rendered = reprojection(result.occupancy, result.grid, geometry)
    binary = masks >= 0.5
    metrics: dict[str, Any] = {"method": name, "reprojection_dice": [_dice2d(rendered[v], binary[v])
                                                                     for v in range(len(binary))],
                               "vessel_pixels_at_edge": at_edge}
    ambiguous_uv = np.zeros((len(binary), 0, 2))
    if angles:
        points = np.concatenate([b.points for b in tree.branches])
        ambiguous_uv = geometry.project_points(points[np.concatenate(angles) < AMBIGUOUS_DEG])
    for v in range(len(binary)):
        rel = f"overlays/view_{v + 1}.png"
        ctx.path(rel).parent.mkdir(parents=True, exist_ok=True)
        _overlay(ctx.path(rel), loaded.images[v], binary[v], rendered[v],
                 f"view {v + 1}: reprojection Dice {metrics['reprojection_dice'][v]:.3f}", ambiguous_uv[v])
        ctx.add_output("overlays", rel, f"view {v + 1}: measured image, mask contour, rendered reprojection")
    if tree is not None:
        from ..coronary.epipolar import depth_ambiguous_length, plan_further_view

        ambiguous = depth_ambiguous_length(tree, geometry, AMBIGUOUS_DEG)
        metrics["centerlines"] = {"branches": len(tree.branches), "total_length_mm": float(tree.total_length),
                                  "depth_ambiguous_mm": ambiguous, "depth_ambiguous_deg": AMBIGUOUS_DEG}
        if ambiguous > 0:
            try:
                plan = plan_further_view([b.points for b in tree.branches], geometry, AMBIGUOUS_DEG)
                metrics["centerlines"]["further_view"] = {**asdict(plan), "label": plan.label()}
                hint = (f"; a further view at {plan.label()} would leave {plan.open_mm:.0f} mm open "
                        "(metrics.json: centerlines.further_view)")
            except BadInput as exc:                       # geometry not in the C-arm frame: no angles to suggest
                hint = f"; no further view suggested: {exc}"
            ctx.log(f"{ambiguous:.0f} of {tree.total_length:.0f} mm of centerline run within {AMBIGUOUS_DEG:g}° of the "
                    f"views' epipolar planes: the views do not fix their depth, which follows their ends{hint}")
    if job.get("reference"):
        ctx.progress(0.88, "evaluate", "against the reference")
        metrics["reference"] = _evaluate(Path(job["reference"]), result, lumen)
    if pose is not None:
        metrics["pose_correction"] = ctx.extra["pose_correction"] = pose
    metrics["info"] = result.info
    metrics["timings"] = timings
    (ctx.path("metrics.json")).write_text(json.dumps(metrics, indent=1, default=_jsonable))
    ctx.add_output("metrics", "metrics.json", "reprojection Dice per view (+ 3D scores against the reference)")
    ctx.extra["timings"] = timings
    ctx.progress(1.0, "done", f"{name}: reprojection Dice {np.mean(metrics['reprojection_dice']):.3f}")


def _evaluate(path: Path, result: Any, lumen: np.ndarray) -> dict[str, Any]:
    kind, ref = _reference(path)
    if kind == "mask":
        from ..coronary.scoring import score_occupancy

        arr, grid = ref
        return {"path": str(path), **score_occupancy(result.occupancy, result.grid, arr, grid)}
    from ..metrics.evaluate import evaluate_meshes
    from ..metrics.volume import n_components
    from ..vessels.surface import volume_to_mesh

    if not lumen.any():
        raise BadInput("the reconstruction is empty; nothing to compare with the reference mesh")
    m = volume_to_mesh(result.occupancy, result.grid, 0.5)
    return {"path": str(path), "components": n_components(lumen),
            **evaluate_meshes((m.vertices, m.faces), ref, n_samples=20000)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
