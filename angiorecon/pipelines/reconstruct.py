"""``reconstruct``: a DSA run (VPAL/4DRGS dataset folder or DICOM XA study) → 3D/4D vessels.

``angiorecon reconstruct DATASET|DICOM... [--method kinetic|vpal|4drgs|fdk|sart] [--preset fast|paper]
[--views K | --view-list i,j,..] [--reference REF] --out DIR``

Methods live in :data:`METHODS` (name → ``"module:function"``, imported only when chosen). A method
is called as ``function(request)`` with a :class:`ReconRequest` and returns either a static volume
``[z, y, x]`` or a :class:`~angiorecon.recon.base.DynamicResult` on ``request.grid``. Every method
then gets the same outputs (roles in ``manifest.json``): the vessel volume (maximum opacification;
world = ITK physical), the adaptive vessel segmentation, a surface mesh, centerline curves with
radii, the 4D filling sequence and time-to-peak map (dynamic methods), renderings of every frame
of the run next to the measured ones with held-out 2D metrics, previews, and ``metrics.json``
against ``--reference`` (a mask/volume or a mesh).
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import BadInput
from ..formats.dataset import DSADataset
from ..geometry import ConeBeamGeometry, VolumeGrid, select_views
from ..worker import TaskContext

if TYPE_CHECKING:
    from ..recon.base import DynamicResult, ReconProblem

HELP = "reconstruct a volume from a VPAL/4DRGS dataset folder (transforms.json + projections)"

FORMATS = ("nii.gz", "nrrd")


@dataclass(frozen=True)
class MethodSpec:
    target: str           #: "package.module:function"
    help: str

    def load(self) -> Callable[["ReconRequest"], "np.ndarray | DynamicResult"]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


DEFAULT_METHOD = "kinetic"

#: reconstruction methods selectable with ``--method``
METHODS: dict[str, MethodSpec] = {
    "kinetic": MethodSpec("angiorecon.pipelines.reconstruct:run_kinetic",
                          "default: vessel map × coarse filling curves, alternating OS-SIRT (CPU, minutes)"),
    "vpal": MethodSpec("angiorecon.pipelines.reconstruct:run_vpal",
                       "VPAL vessel-probability-gated static + dynamic hash-grid fields (presets fast|paper)"),
    "4drgs": MethodSpec("angiorecon.pipelines.reconstruct:run_4drgs",
                        "4DRGS radiative Gaussians with a time-dependent attenuation field (presets fast|paper)"),
    "fdk": MethodSpec("angiorecon.pipelines.reconstruct:run_fdk",
                      "FDK with Parker short-scan weights (params: filter = ram-lak|shepp-logan|hann, short_scan)"),
    "sart": MethodSpec("angiorecon.pipelines.reconstruct:run_sart",
                       "SART/OS-SART with positivity (params: iterations, subsets, relaxation)"),
}


def register_method(name: str, target: str, help: str) -> None:
    METHODS[name] = MethodSpec(target, help)


@dataclass
class ReconRequest:
    """Everything a method needs: the chosen views' data and geometry, the grid, parameters."""

    dataset: DSADataset
    views: np.ndarray                 #: indices of the chosen frames in the run
    projections: np.ndarray           #: [K, H, W] float32 line integrals of those frames
    geometry: ConeBeamGeometry        #: geometry of those frames (times in ``geometry.times``)
    grid: VolumeGrid
    params: dict[str, Any] = field(default_factory=dict)
    ctx: TaskContext | None = None
    progress: Callable[[float, str], None] = lambda f, m="": None


def run_fdk(req: ReconRequest) -> np.ndarray:
    from ..operators import fdk

    short = req.params.get("short_scan")
    return fdk(req.projections, req.grid, req.geometry, filter=str(req.params.get("filter", "ram-lak")),
               short_scan=None if short is None else bool(short), progress=req.progress)


def run_sart(req: ReconRequest) -> np.ndarray:
    from ..operators import sart

    return sart(req.projections, req.grid, req.geometry, iterations=int(req.params.get("iterations", 10)),
                subsets=int(req.params.get("subsets", min(5, req.geometry.n_views))),
                relaxation=float(req.params.get("relaxation", 1.0)), progress=req.progress)


def normalised_times(geometry: ConeBeamGeometry) -> np.ndarray:
    """Frame times mapped so that frame i of a regular run is at i/N (the anchors' convention).

    Real times (seconds, from DICOM or the simulator) keep their irregular spacing; without
    times the frame index is used.
    """
    n = geometry.n_views
    if geometry.times is None or n < 2:
        return np.arange(n) / max(n, 1)
    t = np.asarray(geometry.times, dtype=np.float64)
    dt = float(np.median(np.diff(t))) or 1.0
    return (t - t[0]) / (n * dt)


def _problem(req: ReconRequest) -> "ReconProblem":
    from ..recon.base import ReconProblem

    ctx = req.ctx
    return ReconProblem(req.projections, req.geometry, np.asarray(req.params["_times"]), req.grid,
                        device=ctx.device if ctx is not None else "cpu", seed=int(req.params.get("seed", 0)),
                        progress=req.progress, check_cancelled=ctx.check_cancelled if ctx else (lambda: None))


def _tuning(req: ReconRequest) -> dict[str, Any]:
    """Method-specific overrides: every ``--param`` except the pipeline's own keys."""
    return {k: v for k, v in req.params.items() if not k.startswith("_") and k not in ("preset", "seed")}


def run_kinetic(req: ReconRequest) -> "DynamicResult":
    from ..recon.kinetic import reconstruct_kinetic

    return reconstruct_kinetic(_problem(req), str(req.params.get("preset", "fast")), **_tuning(req))


def run_vpal(req: ReconRequest) -> "DynamicResult":
    from ..recon.vpal import reconstruct_vpal

    return reconstruct_vpal(_problem(req), str(req.params.get("preset", "fast")), **_tuning(req))


def run_4drgs(req: ReconRequest) -> "DynamicResult":
    from ..recon.rgs4d import reconstruct_4drgs

    return reconstruct_4drgs(_problem(req), str(req.params.get("preset", "fast")), **_tuning(req))


def reconstruct(dataset: DSADataset, method: str, views: int | list[int] | None, params: dict[str, Any],
                ctx: TaskContext | None = None, progress: Callable[[float, str], None] | None = None) -> "DynamicResult":
    """Run ``method`` on the chosen views of ``dataset`` (the same path as the CLI)."""
    from ..recon.base import DynamicResult

    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    idx = select_views(dataset.geometry.n_views, views)
    proj = dataset.line_integrals()[idx]
    params = dict(params, _times=normalised_times(dataset.geometry)[idx].tolist())
    req = ReconRequest(dataset, idx, np.ascontiguousarray(proj), dataset.geometry.subset(idx), dataset.grid,
                       params, ctx, progress or (lambda f, m="": None))
    out = METHODS[method].load()(req)
    result = out if isinstance(out, DynamicResult) else DynamicResult.from_static(out, dataset.grid, {"method": method})
    if result.frames.shape[1:] != dataset.grid.shape:
        raise RuntimeError(f"method {method} returned shape {result.frames.shape[1:]}, expected {dataset.grid.shape}")
    return result


def write_mip_png(path: Path, volume: np.ndarray) -> None:
    """Maximum-intensity projections along z, y and x side by side, grey, 0 … 99.9th percentile."""
    import matplotlib.image

    mips = [volume.max(axis=0), volume.max(axis=1)[::-1], volume.max(axis=2)[::-1]]
    top = max(float(np.percentile(np.concatenate([m.ravel() for m in mips]), 99.9)), 1e-12)
    h = max(m.shape[0] for m in mips)
    gap = np.zeros((h, 2))
    panels = []
    for m in mips:
        pad = np.zeros((h, m.shape[1]))
        pad[: m.shape[0]] = np.clip(m / top, 0, 1)
        panels += [pad, gap]
    matplotlib.image.imsave(str(path), np.concatenate(panels[:-1], axis=1), cmap="gray", vmin=0, vmax=1)


def parse_view_list(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), json.loads(v)
    except json.JSONDecodeError:
        return k.strip(), v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path,
                   help="a dataset folder (transforms.json + proj.nii.gz or mask/fill runs), or DICOM XA files/folders")
    p.add_argument("--method", default=DEFAULT_METHOD, help="; ".join(f"{k}: {v.help}" for k, v in METHODS.items()))
    p.add_argument("--preset", choices=("fast", "paper"), help="dynamic methods: fast (CPU) or paper (published settings)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--views", type=int, help="use K views uniform in frame index (floor(arange(0, N, N/K)))")
    sel.add_argument("--view-list", type=parse_view_list, metavar="I,J,..", help="explicit frame indices")
    p.add_argument("--reference", type=Path, help="reference mask/volume or mesh: writes metrics.json")
    p.add_argument("--filter", choices=("ram-lak", "shepp-logan", "hann"), help="FDK ramp filter window")
    p.add_argument("--iterations", type=int, help="iterative methods: iterations")
    p.add_argument("--subsets", type=int, help="SART: ordered subsets (1 = SIRT, K = classic SART)")
    p.add_argument("--relaxation", type=float, help="SART: relaxation in (0, 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the learned methods")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="any method parameter (JSON value), repeatable")
    p.add_argument("--skip", default="", help="outputs to skip, comma separated: mesh,centerlines,renderings")
    p.add_argument("--format", choices=FORMATS, default="nii.gz", help="volume file format")
    p.add_argument("--sid", type=float, help="DICOM input: override Distance Source to Detector (mm)")
    p.add_argument("--sod", type=float, help="DICOM input: override Distance Source to Patient (mm)")
    p.add_argument("--voxel-size", type=float, help="DICOM input: voxel size of the output grid (mm)")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    params = {k: v for k, v in (("filter", args.filter), ("iterations", args.iterations),
                                ("subsets", args.subsets), ("relaxation", args.relaxation),
                                ("preset", args.preset)) if v is not None}
    params["seed"] = args.seed
    params.update(dict(args.param))
    views = args.views if args.views is not None else args.view_list
    job: dict[str, Any] = {"inputs": [str(Path(i).absolute()) for i in args.inputs], "method": args.method,
                           "views": views, "params": params, "format": args.format,
                           "skip": [x for x in args.skip.replace(" ", "").split(",") if x]}
    if args.reference is not None:
        job["reference"] = str(Path(args.reference).absolute())
    overrides = {k: v for k, v in (("sid", args.sid), ("sod", args.sod)) if v is not None}
    if overrides:
        job["overrides"] = overrides
    if args.voxel_size is not None:
        job["voxel_size"] = args.voxel_size
    return job


def load_input(job: dict[str, Any], ctx: TaskContext) -> DSADataset:
    """A dataset folder, or a DICOM XA study turned into an in-memory dataset on a default grid."""
    from ..formats.dataset import read_dataset

    inputs = job.get("inputs") or ([job["dataset"]] if "dataset" in job else [])
    if not inputs:
        raise BadInput("job lacks 'inputs' (a dataset folder or DICOM XA files/folders)")
    inputs = [Path(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if len(inputs) == 1 and (inputs[0] / "transforms.json").is_file():
        return read_dataset(inputs[0], load_raw=True)
    from ..formats.dicom_xa import XAOverrides
    from ..formats.xa_study import load_study, select_dsa
    from .convert import default_grid

    study = load_study(inputs, XAOverrides.from_dict(job.get("overrides")))
    for msg in study.skipped:
        ctx.log(f"skipped: {msg}", "warning")
    signal = select_dsa(study.runs)
    ctx.log(signal.how)
    geometry = signal.geometry
    if geometry.times is None:
        geometry = ConeBeamGeometry(geometry.source, geometry.det_center, geometry.det_u, geometry.det_v,
                                    geometry.det_shape, signal.times_s, geometry.meta)
    grid = default_grid(geometry, None, job.get("voxel_size"))
    return DSADataset(geometry, grid, projections=signal.line_integrals, extra={"source": "DICOM XA"})


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..formats.volume import write_volume

    method = str(job.get("method", DEFAULT_METHOD))
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    fmt = str(job.get("format", "nii.gz"))
    if fmt not in FORMATS:
        raise BadInput(f"unknown volume format {fmt!r}; use one of {', '.join(FORMATS)}")
    skip = set(job.get("skip") or [])
    ctx.progress(0.0, "read", ", ".join(map(str, job.get("inputs") or [job.get("dataset", "")])))
    with ctx.timed("read"):
        ds = load_input(job, ctx)
    views = job.get("views")
    idx = select_views(ds.geometry.n_views, views)
    stage = ctx.reporter.stage(method, 0.03, 0.75)
    with ctx.timed("reconstruct"):
        result = reconstruct(ds, method, views, job.get("params") or {}, ctx, lambda f, m="": stage(f, m))
    ctx.progress(0.75, "write", "volumes")
    vessel = result.max_opacification
    write_volume(ctx.path(f"volume.{fmt}"), vessel, ds.grid)
    ctx.add_output("volume", f"volume.{fmt}", f"{method}: maximum-opacification vessel volume (1/mm)")
    write_mip_png(ctx.path("mip.png"), vessel)
    ctx.add_output("preview", "mip.png", "maximum-intensity projections along z, y, x")
    with ctx.timed("vessels"):
        mask = _write_vessel_outputs(ctx, vessel, ds.grid, fmt, skip)
    if result.static is None:
        _write_dynamic_outputs(ctx, result, ds, fmt)
    if "renderings" not in skip:
        with ctx.timed("renderings"):
            _write_renderings(ctx, result, ds, idx)
    if job.get("reference"):
        with ctx.timed("metrics"):
            _write_metrics(ctx, Path(job["reference"]), vessel, mask, ds.grid)
    ctx.extra["reconstruction"] = {"method": method, "views": idx.tolist(), "n_frames": ds.geometry.n_views,
                                   "volume_shape_zyx": list(ds.grid.shape), "voxel_size_mm": ds.grid.spacing.tolist(),
                                   "info": result.info}
    ctx.log(f"{method}: {idx.size} of {ds.geometry.n_views} views reconstructed")


def _write_vessel_outputs(ctx: TaskContext, vessel: np.ndarray, grid: VolumeGrid, fmt: str,
                          skip: set[str]) -> np.ndarray:
    """Adaptive segmentation → mask, surface mesh and centerline tree (each in world coordinates)."""
    from ..formats.volume import write_volume
    from ..vessels.segmentation import segment_vessels
    from ..vessels.surface import mask_to_mesh

    ctx.progress(0.78, "segment", "adaptive threshold")
    mask, info = segment_vessels(vessel, grid)
    ctx.extra["segmentation"] = info
    write_volume(ctx.path(f"vessel_mask.{fmt}"), mask.astype(np.uint8), grid)
    ctx.add_output("vessel_mask", f"vessel_mask.{fmt}", "adaptive vessel segmentation (thresholds in the manifest)")
    if not mask.any():
        ctx.log("the segmentation is empty: no mesh or centerlines", "warning")
        return mask
    if "mesh" not in skip:
        ctx.progress(0.8, "mesh", "flying edges + windowed sinc")
        mask_to_mesh(mask, grid).write(ctx.path("vessels.vtp"))
        ctx.add_output("mesh", "vessels.vtp", "vessel surface (LPS world mm)")
    if "centerlines" not in skip:
        from ..vessels.centerlines import extract_centerlines

        ctx.progress(0.83, "centerlines", "thinning + graph")
        tree = extract_centerlines(mask, grid)
        tree.write_markups(ctx.path("centerlines.mrk.json"))
        ctx.add_output("centerlines", "centerlines.mrk.json", "centerline curves with a Radius measurement")
        tree.write_vtp(ctx.path("centerlines.vtp"))
        ctx.add_output("centerlines", "centerlines.vtp", "centerline polylines with Radius (VMTK arrays)")
        tree.write_table(ctx.path("branches.csv"))
        ctx.add_output("table", "branches.csv", "branch length, mean radius, tortuosity")
        ctx.extra["centerlines"] = tree.summary()
    return mask


def _write_dynamic_outputs(ctx: TaskContext, result: "DynamicResult", ds: DSADataset, fmt: str) -> None:
    from ..formats.sequence import write_volume_sequence
    from ..formats.volume import write_volume

    ctx.progress(0.86, "write", "4D filling")
    unit, scale, t0 = _time_unit(ds.geometry)
    write_volume_sequence(ctx.path("filling.seq.nrrd"), result.frames, ds.grid, (t0 + scale * result.times).tolist(),
                          index_unit=unit)
    ctx.add_output("sequence", "filling.seq.nrrd", f"4D contrast filling, {len(result.times)} time points",
                   index_unit=unit)
    ttp = (t0 + scale * result.time_to_peak()).astype(np.float32)
    write_volume(ctx.path(f"time_to_peak.{fmt}"), ttp, ds.grid)
    ctx.add_output("time_to_peak", f"time_to_peak.{fmt}", f"time of maximum opacification ({unit})")
    write_volume(ctx.path(f"time_average.{fmt}"), result.time_average, ds.grid)
    ctx.add_output("volume", f"time_average.{fmt}", "mean over time (the anchors' output, for comparison)")


def _time_unit(geometry: ConeBeamGeometry) -> tuple[str, float, float]:
    """(unit, scale, offset) turning normalised times back into the run's own time unit."""
    n = geometry.n_views
    if geometry.times is None or n < 2:
        return "frame", float(n), 0.0
    t = np.asarray(geometry.times, dtype=np.float64)
    return "s", n * (float(np.median(np.diff(t))) or 1.0), float(t[0])


def _write_renderings(ctx: TaskContext, result: "DynamicResult", ds: DSADataset, train: np.ndarray) -> None:
    """Render every frame of the run at its own time; compare with the measurement (held-out = not trained)."""
    from ..formats.volume import write_stack
    from ..metrics.image import projection_metrics

    stage = ctx.reporter.stage("render", 0.88, 0.97)
    measured = ds.line_integrals()
    rendered = result.render(ds.geometry, normalised_times(ds.geometry), lambda f, m="": stage(f, m))
    spacing = tuple(ds.geometry.pixel_spacing[0])
    write_stack(ctx.path("renderings/rendered.nii.gz"), rendered, spacing)
    write_stack(ctx.path("renderings/measured.nii.gz"), measured, spacing)
    ctx.add_output("renderings", "renderings/rendered.nii.gz", "every frame rendered at its own time",
                   index_name="frame")
    ctx.add_output("renderings", "renderings/measured.nii.gz", "the measured DSA frames", index_name="frame")
    held_out = np.setdiff1d(np.arange(ds.geometry.n_views), train)
    metrics = {"train": projection_metrics(rendered, measured, train)}
    if held_out.size:
        metrics["held_out"] = projection_metrics(rendered, measured, held_out)
    ctx.extra["projection_metrics"] = {k: {m: v for m, v in d.items() if m != "per_frame"}
                                       for k, d in metrics.items()}
    _contact_sheet(ctx.path("renderings.png"), rendered, measured, train)
    ctx.add_output("preview", "renderings.png", "measured (top) vs rendered (bottom) frames; held-out marked")


def _contact_sheet(path: Path, rendered: np.ndarray, measured: np.ndarray, train: np.ndarray, n: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = np.linspace(0, len(measured) - 1, n).astype(int)
    top = max(float(np.percentile(measured, 99.9)), 1e-12)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.3))
    for col, f in enumerate(frames):
        for row, (img, name) in enumerate(((measured, "measured"), (rendered, "rendered"))):
            ax = axes[row, col]
            ax.imshow(img[f], cmap="gray_r", vmin=0, vmax=top)
            ax.set_axis_off()
            kind = "train" if f in set(train.tolist()) else "held-out"
            ax.set_title(f"{name} {f} ({kind})" if row == 0 else name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _write_metrics(ctx: TaskContext, reference: Path, vessel: np.ndarray, mask: np.ndarray, grid: VolumeGrid) -> None:
    from ..formats.mesh import MESH_SUFFIXES, read_mesh
    from ..formats.volume import read_volume
    from ..metrics.evaluate import evaluate_meshes, evaluate_volumes
    from ..vessels.surface import mask_to_mesh
    from ..worker import write_json_atomic

    ctx.progress(0.97, "metrics", reference.name)
    if not reference.exists():
        raise BadInput(f"--reference {reference} does not exist")
    if any(reference.name.lower().endswith(s) for s in MESH_SUFFIXES):
        v, f, _ = read_mesh(reference)
        metrics = evaluate_meshes(tuple(mask_to_mesh(mask, grid)), (v, f))
    else:
        ref, ref_grid = read_volume(reference)
        metrics = evaluate_volumes(mask, ref, ref_grid, pred_grid=grid, pred_kind="mask")
    write_json_atomic(ctx.path("metrics.json"), metrics)
    ctx.add_output("metrics", "metrics.json", f"against {reference.name}")
