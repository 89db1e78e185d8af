"""``reconstruct``: a VPAL/4DRGS dataset folder → volume on its ``volume_*`` grid (+ MIP preview).

``angiorecon reconstruct DATASET --method fdk|sart [--views K | --view-list i,j,..] --out DIR``

Methods live in :data:`METHODS` (name → ``"module:function"``, imported only when chosen), so
dynamic methods register with one line. A method is called as ``function(request)`` with a
:class:`ReconRequest` and returns the static volume ``[z, y, x]`` (float32) on ``request.grid``;
it may write further outputs itself through ``request.ctx`` (``ctx.path`` / ``ctx.add_output``).
The volume is written so that ITK physical coordinates equal the dataset's world coordinates.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BadInput
from ..formats.dataset import DSADataset
from ..geometry import ConeBeamGeometry, VolumeGrid, select_views
from ..worker import TaskContext

HELP = "reconstruct a volume from a VPAL/4DRGS dataset folder (transforms.json + projections)"

FORMATS = ("nii.gz", "nrrd")


@dataclass(frozen=True)
class MethodSpec:
    target: str           #: "package.module:function"
    help: str

    def load(self) -> Callable[["ReconRequest"], np.ndarray]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


#: reconstruction methods selectable with ``--method`` (add dynamic methods here)
METHODS: dict[str, MethodSpec] = {
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


def reconstruct(dataset: DSADataset, method: str, views: int | list[int] | None, params: dict[str, Any],
                ctx: TaskContext | None = None, progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Run ``method`` on the chosen views of ``dataset`` (the same path as the CLI)."""
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    idx = select_views(dataset.geometry.n_views, views)
    proj = dataset.line_integrals()[idx]
    req = ReconRequest(dataset, idx, np.ascontiguousarray(proj), dataset.geometry.subset(idx), dataset.grid,
                       dict(params), ctx, progress or (lambda f, m="": None))
    vol = np.asarray(METHODS[method].load()(req), dtype=np.float32)
    if vol.shape != dataset.grid.shape:
        raise RuntimeError(f"method {method} returned shape {vol.shape}, expected {dataset.grid.shape}")
    return vol


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
    p.add_argument("dataset", type=Path, help="dataset folder (transforms.json + proj.nii.gz or mask/fill runs)")
    p.add_argument("--method", default="fdk", help="; ".join(f"{k}: {v.help}" for k, v in METHODS.items()))
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--views", type=int, help="use K views uniform in frame index (floor(arange(0, N, N/K)))")
    sel.add_argument("--view-list", type=parse_view_list, metavar="I,J,..", help="explicit frame indices")
    p.add_argument("--filter", choices=("ram-lak", "shepp-logan", "hann"), help="FDK ramp filter window")
    p.add_argument("--iterations", type=int, help="iterative methods: iterations")
    p.add_argument("--subsets", type=int, help="SART: ordered subsets (1 = SIRT, K = classic SART)")
    p.add_argument("--relaxation", type=float, help="SART: relaxation in (0, 2)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="any method parameter (JSON value), repeatable")
    p.add_argument("--format", choices=FORMATS, default="nii.gz", help="volume file format")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    params = {k: v for k, v in (("filter", args.filter), ("iterations", args.iterations),
                                ("subsets", args.subsets), ("relaxation", args.relaxation)) if v is not None}
    params.update(dict(args.param))
    views = args.views if args.views is not None else args.view_list
    return {"dataset": str(Path(args.dataset).absolute()), "method": args.method, "views": views,
            "params": params, "format": args.format}


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..formats.dataset import read_dataset
    from ..formats.volume import write_volume

    if "dataset" not in job:
        raise BadInput("job lacks 'dataset' (the dataset folder)")
    method = str(job.get("method", "fdk"))
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    fmt = str(job.get("format", "nii.gz"))
    if fmt not in FORMATS:
        raise BadInput(f"unknown volume format {fmt!r}; use one of {', '.join(FORMATS)}")
    ctx.progress(0.0, "read", str(job["dataset"]))
    with ctx.timed("read"):
        ds = read_dataset(job["dataset"], load_raw=True)
    views = job.get("views")
    stage = ctx.reporter.stage(method, 0.05, 0.95)
    with ctx.timed("reconstruct"):
        vol = reconstruct(ds, method, views, job.get("params") or {}, ctx, lambda f, m="": stage(f, m))
    ctx.progress(0.95, "write", "volume")
    name = f"volume.{fmt}"
    write_volume(ctx.path(name), vol, ds.grid)
    ctx.add_output("volume", name, f"{method} reconstruction on the dataset's volume grid (world = ITK physical)")
    write_mip_png(ctx.path("mip.png"), vol)
    ctx.add_output("preview", "mip.png", "maximum-intensity projections along z, y, x")
    idx = select_views(ds.geometry.n_views, views)
    ctx.extra["reconstruction"] = {"method": method, "views": idx.tolist(), "n_frames": ds.geometry.n_views,
                                   "volume_shape_zyx": list(ds.grid.shape), "voxel_size_mm": ds.grid.spacing.tolist()}
    ctx.log(f"{method}: {idx.size} of {ds.geometry.n_views} views → {name}")
