"""``project``: line integrals of a volume for a geometry → projection stack ``[frames, rows, cols]``.

``angiorecon project --volume V --geometry transforms.json|geometry.json --out DIR``

The volume's ITK physical coordinates are taken as world coordinates. The output folder holds
``proj.<ext>`` (value × mm), ``geometry.json`` (the exact per-view geometry) and a
``transforms.json`` describing the same rays and the volume's grid, so a NIfTI output folder is
itself a dataset that ``reconstruct`` can read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry
from ..worker import TaskContext

HELP = "forward-project a volume (NIfTI/NRRD) for a geometry (transforms.json or geometry.json)"

FORMATS = ("nii.gz", "nrrd")


def load_geometry(path: str | Path) -> ConeBeamGeometry:
    """A geometry from our ``geometry.json`` or from a VPAL/4DRGS ``transforms.json``."""
    from ..formats.dataset import parse_transforms

    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"geometry file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read geometry {path}: {exc}") from None
    if isinstance(d, dict) and str(d.get("format", "")).startswith("angiorecon.ConeBeamGeometry"):
        return ConeBeamGeometry.from_dict(d)
    return parse_transforms(d, str(path))[0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--volume", required=True, type=Path, help="volume to project (NIfTI, NRRD, MHA)")
    p.add_argument("--geometry", required=True, type=Path, help="transforms.json (VPAL/4DRGS) or geometry.json")
    p.add_argument("--format", choices=FORMATS, default="nii.gz", help="projection stack format")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"volume": str(Path(args.volume).absolute()), "geometry": str(Path(args.geometry).absolute()),
            "format": args.format}


def _project(volume: np.ndarray, grid, geometry: ConeBeamGeometry, device: str, progress) -> np.ndarray:
    """CPU: the numba projector; CUDA: the torch projector, a few views at a time."""
    out = np.empty((geometry.n_views, *geometry.det_shape), np.float32)
    block = 8
    if device.startswith("cuda"):
        import torch

        from ..operators.projector_torch import project_torch

        vol = torch.as_tensor(volume, device=device)
        with torch.no_grad():
            for lo in range(0, geometry.n_views, block):
                hi = min(lo + block, geometry.n_views)
                out[lo:hi] = project_torch(vol, grid, geometry, np.arange(lo, hi)).cpu().numpy()
                progress(hi / geometry.n_views, f"{hi}/{geometry.n_views} views")
        return out
    from ..operators import forward_project

    for lo in range(0, geometry.n_views, block):
        hi = min(lo + block, geometry.n_views)
        forward_project(volume, grid, geometry.subset(np.arange(lo, hi)), out=out[lo:hi])
        progress(hi / geometry.n_views, f"{hi}/{geometry.n_views} views")
    return out


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..formats.dataset import transforms_dict
    from ..formats.volume import read_volume, write_stack

    for key in ("volume", "geometry"):
        if key not in job:
            raise BadInput(f"job lacks {key!r}")
    fmt = str(job.get("format", "nii.gz"))
    if fmt not in FORMATS:
        raise BadInput(f"unknown stack format {fmt!r}; use one of {', '.join(FORMATS)}")
    geometry = load_geometry(job["geometry"])
    volume, grid = read_volume(job["volume"])
    volume = np.asarray(volume, dtype=np.float32)
    if not np.all(np.isfinite(volume)):
        raise BadInput(f"volume {job['volume']} contains NaN or infinite values")
    stage = ctx.reporter.stage("project", 0.05, 0.9)
    with ctx.timed("project"):
        proj = _project(volume, grid, geometry, ctx.device, lambda f, m="": stage(f, m))
    name = f"proj.{fmt}"
    write_stack(ctx.path(name), proj, tuple(float(x) for x in geometry.pixel_spacing[0]))
    ctx.add_output("projections", name, "line integrals (volume value × mm), [frames, rows, cols]")
    geometry.save_json(ctx.path("geometry.json"))
    ctx.add_output("other", "geometry.json", "exact per-view geometry of the stack")
    ctx.path("transforms.json").write_text(json.dumps(transforms_dict(geometry, grid), indent=1))
    ctx.add_output("dataset", "transforms.json", "VPAL/4DRGS geometry of the stack and the volume grid")
    ctx.extra["projection"] = {"n_views": geometry.n_views, "det_shape": list(geometry.det_shape),
                               "max": float(proj.max())}
