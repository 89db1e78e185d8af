"""``evaluate``: compare a prediction with a reference and write ``metrics.json``.

``angiorecon evaluate PRED --reference REF --out DIR``. PRED/REF may be volumes (masks, or
intensity volumes that are then segmented with the same adaptive method — the output says so),
meshes (.vtp/.vtk/.stl/.obj/.ply, LPS world mm), or projection stacks (``--kind projections``:
2D PSNR/SSIM with and without per-image min–max normalisation). A prediction on another grid is
resampled onto the reference grid. A volume compared with a mesh is segmented and meshed first.
For two volumes the task also writes what the numbers were computed on (masks on the common grid,
surfaces — the prediction's coloured by ``DistanceToReference`` — and both centerline trees), so
the Slicer module can show where the prediction is wrong, not only by how much.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..worker import TaskContext, write_json_atomic

HELP = ("compare a prediction with a reference: Dice, clDice, CD/HD95 (strict and the anchors' ICP "
        "protocol), centerline completeness/radius error, PSNR/SSIM → metrics.json")

KINDS = ("auto", "volume", "mesh", "projections")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="prediction: volume (.nii.gz/.nrrd/.mha), mesh (.vtp/.vtk/.stl/.obj/.ply) or stack")
    p.add_argument("--reference", required=True, type=Path, help="reference of the same kind (its grid is the common grid)")
    p.add_argument("--kind", choices=KINDS, default="auto", help="input kind (auto: from the file suffixes)")
    p.add_argument("--pred-kind", choices=("auto", "mask", "intensity"), default="auto",
                   help="prediction volume is a mask or an intensity volume to segment (auto: binary → mask)")
    p.add_argument("--ref-kind", choices=("auto", "mask", "intensity"), default="auto", help="same for the reference")
    p.add_argument("--anchor-level", type=float, default=None,
                   help="iso-level for the anchors' protocol on intensity volumes (e.g. 0.008 for 4DRGS output)")
    p.add_argument("--reference-centerlines", type=Path, default=None,
                   help=".mrk.json with exact reference centerlines (e.g. from the simulator)")
    p.add_argument("--samples", type=int, default=100_000, help="surface samples per mesh for CD/HD95")
    p.add_argument("--no-centerlines", action="store_true", help="skip centerline metrics")
    p.add_argument("--frames", type=int, nargs="*", default=None, help="projection frames to score (default all)")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"pred": str(args.pred.absolute()), "reference": str(args.reference.absolute()), "kind": args.kind,
            "pred_kind": args.pred_kind, "ref_kind": args.ref_kind, "anchor_level": args.anchor_level,
            "reference_centerlines": str(args.reference_centerlines.absolute()) if args.reference_centerlines else None,
            "samples": args.samples, "centerlines": not args.no_centerlines, "frames": args.frames}


def _kind_of(path: Path) -> str:
    from ..formats.mesh import MESH_SUFFIXES
    from ..formats.volume import VOLUME_SUFFIXES

    name = path.name.lower()
    if path.suffix.lower() in MESH_SUFFIXES:
        return "mesh"
    if any(name.endswith(s) for s in VOLUME_SUFFIXES):
        return "volume"
    raise BadInput(f"{path}: unknown file type; expected a volume ({', '.join(VOLUME_SUFFIXES)}) "
                   f"or a mesh ({', '.join(MESH_SUFFIXES)})")


def _mesh_from_volume(path: Path, kind: str) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    from ..formats.volume import read_volume
    from ..vessels.segmentation import segment_vessels
    from ..vessels.surface import mask_to_mesh

    vol, grid = read_volume(path)
    mask, info = segment_vessels(vol, grid, method="mask" if kind == "mask" else "auto")
    if not mask.any():
        raise BadInput(f"{path}: segmentation is empty; nothing to compare")
    return tuple(mask_to_mesh(mask, grid)), info


def _write_artifacts(ctx: TaskContext, art: dict[str, Any], grid: Any) -> None:
    """What the metrics were computed on, for inspection in Slicer: the two masks on the common
    grid, both surfaces (the prediction's with ``DistanceToReference`` in mm per vertex) and both
    centerline trees."""
    from ..formats.volume import write_volume
    from ..metrics.surface import point_to_surface

    for who in ("pred", "ref"):
        rel = f"{who}_mask.nii.gz"
        write_volume(ctx.path(rel), art[f"{who}_mask"].astype(np.uint8), grid)
        ctx.add_output("vessel_mask", rel, f"{'prediction' if who == 'pred' else 'reference'} vessel mask on the reference grid")
    pm, rm = art["pred_mesh"], art["ref_mesh"]
    if len(pm.faces) and len(rm.faces):
        pm.point_arrays["DistanceToReference"] = point_to_surface(pm.vertices, rm.vertices, rm.faces)
    for who, mesh in (("pred", pm), ("ref", rm)):
        if len(mesh.faces):
            rel = f"{who}_surface.vtp"
            mesh.write(ctx.path(rel))
            ctx.add_output("mesh", rel, f"{'prediction' if who == 'pred' else 'reference'} surface (LPS mm)")
    for who in ("pred", "ref"):
        tree = art.get(f"{who}_centerlines")
        if tree is not None and tree.branches:
            rel = f"{who}_centerlines.mrk.json"
            tree.write_markups(ctx.path(rel), base_name="Prediction" if who == "pred" else "Reference")
            ctx.add_output("centerlines", rel, f"{'prediction' if who == 'pred' else 'reference'} centerlines with Radius")


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..formats.mesh import read_mesh

    pred, ref = Path(job["pred"]), Path(job["reference"])
    for p in (pred, ref):
        if not p.exists():
            raise BadInput(f"input file {p} does not exist")
    samples = int(job.get("samples", 100_000))
    if samples < 100:
        raise BadInput(f"samples must be at least 100, got {samples}")
    kind = job.get("kind", "auto")
    if kind not in KINDS:
        raise BadInput(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    pk, rk = (_kind_of(pred), _kind_of(ref)) if kind == "auto" else (kind, kind)
    ctx.progress(0.02, "read", f"{pred.name} vs {ref.name}")
    result: dict[str, Any] = {"pred": str(pred), "reference": str(ref)}
    if pk == "projections":
        from ..formats.volume import read_stack
        from ..metrics.image import projection_metrics

        p, r = read_stack(pred), read_stack(ref)
        if p.shape != r.shape:
            raise BadInput(f"projection stacks differ in shape: {pred.name} {p.shape} vs {ref.name} {r.shape}")
        frames = job.get("frames")
        if frames and (min(frames) < 0 or max(frames) >= len(r)):
            raise BadInput(f"frames must be in [0, {len(r) - 1}]")
        with ctx.timed("projection_metrics"):
            result["projections"] = projection_metrics(p, r, np.asarray(frames) if frames else None)
        summary = {k: result["projections"][k] for k in ("psnr_minmax", "ssim_minmax", "psnr_raw", "ssim_raw")}
    elif pk == "volume" and rk == "volume":
        from ..formats.markups import read_markups_curves
        from ..formats.volume import read_volume
        from ..metrics.evaluate import evaluate_volumes
        from ..vessels.centerlines import CenterlineTree

        pv, pgrid = read_volume(pred)
        rv, rgrid = read_volume(ref)
        ref_tree = None
        if job.get("reference_centerlines"):
            curves, radii, _ = read_markups_curves(job["reference_centerlines"])
            if not curves:
                raise BadInput(f"{job['reference_centerlines']} contains no curves")
            ref_tree = CenterlineTree.from_curves(curves, radii, voxel_size=float(rgrid.spacing.min()))
        art: dict[str, Any] = {}
        with ctx.timed("evaluate_volumes"):
            result.update(evaluate_volumes(
                pv, rv, rgrid, pred_grid=pgrid, pred_kind=job.get("pred_kind", "auto"),
                ref_kind=job.get("ref_kind", "auto"), anchor_level=job.get("anchor_level"), n_samples=samples,
                centerlines=bool(job.get("centerlines", True)), ref_centerlines=ref_tree,
                progress=lambda f, s: ctx.progress(0.05 + 0.85 * f, s), artifacts=art))
        ctx.progress(0.92, "write", "masks, surfaces, centerlines")
        _write_artifacts(ctx, art, rgrid)
        summary = {"dice": result["volume"]["dice"], "cldice": result["volume"]["cldice"],
                   "cd": result["surface"]["cd_sum"], "hd95": result["surface"]["hd95"],
                   "anchors_cd": result["anchors"]["cd"], "anchors_hd95": result["anchors"]["hd95"]}
        if "centerlines" in result:
            summary["completeness"] = result["centerlines"]["completeness"]
    else:
        from ..metrics.evaluate import evaluate_meshes

        meshes = []
        for path, k, vk in ((pred, pk, job.get("pred_kind", "auto")), (ref, rk, job.get("ref_kind", "auto"))):
            if k == "mesh":
                v, f, _ = read_mesh(path)
                meshes.append((v, f))
            else:
                mesh, info = _mesh_from_volume(path, vk)
                meshes.append(mesh)
                result.setdefault("segmentation", {})[path.name] = {
                    **info, "note": "volume segmented adaptively and meshed to compare with a mesh"}
        ctx.progress(0.3, "surfaces")
        with ctx.timed("evaluate_meshes"):
            result.update(evaluate_meshes(meshes[0], meshes[1], n_samples=samples))
        summary = {"cd": result["surface"]["cd_sum"], "hd95": result["surface"]["hd95"],
                   "anchors_cd": result["anchors"]["cd"], "anchors_hd95": result["anchors"]["hd95"]}
    result["summary"] = summary
    write_json_atomic(ctx.path("metrics.json"), result)
    ctx.add_output("metrics", "metrics.json", "evaluation metrics (mm, world frame)")
    ctx.extra["summary"] = summary
    ctx.log("; ".join(f"{k} {v:.4g}" for k, v in summary.items()))
