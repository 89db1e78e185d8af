"""``convert``: a DICOM XA study (folders and/or files) → a VPAL/4DRGS dataset folder.

``angiorecon convert INPUT... --out DATASET [--subtracted] [--sid MM] [--sod MM] [--pixel-spacing R [C]]
[--primary DEG[,DEG...]] [--secondary DEG[,DEG...]] [--volume-size N [N N]] [--voxel-size MM [MM MM]]``

The study is read with :mod:`angiorecon.formats.xa_study` (fill/mask pairing or one pre-subtracted
run), and written with :func:`angiorecon.formats.dataset.write_dataset`: ``transforms.json``, the
line integrals ``proj.nii.gz`` and, for a fill/mask pair stored linear in intensity, the raw
``mask_run`` / ``fill_run``. The world frame of the dataset is the DICOM patient frame (LPS,
isocentre at the origin) and the dataset describes exactly the rays of the DICOM frames: a rotation
about the patient axis is written in the VPAL/4DRGS convention (``PrimaryAngle`` = primary + 90°,
frames mirrored left–right, :func:`vpal_equivalent`), anything else with its exact per-frame
geometry. The default volume grid is centred on the isocentre and covers
the detector's field of view demagnified to the isocentre (``SOD/SID``), at most 256 voxels a side.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid
from ..worker import TaskContext

HELP = "convert a DICOM XA study (fill/mask runs or a subtracted run) into a VPAL/4DRGS dataset folder"

MAX_DEFAULT_VOXELS = 256


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in str(text).replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="DICOM XA/XRF files and/or folders (searched recursively)")
    p.add_argument("--subtracted", action="store_true",
                   help="the (single) run is already subtracted (DSA); default: decide from the files")
    p.add_argument("--sid", type=float, help="source-detector distance, mm (replaces DistanceSourceToDetector)")
    p.add_argument("--sod", type=float, help="source-isocentre distance, mm (replaces DistanceSourceToPatient)")
    p.add_argument("--pixel-spacing", type=float, nargs="+", metavar="MM",
                   help="detector pixel spacing: one value, or row and column, mm (replaces ImagerPixelSpacing)")
    p.add_argument("--primary", type=_floats, metavar="DEG[,DEG...]",
                   help="primary angle (LAO+): one base angle, or one per frame (replaces PositionerPrimaryAngle); "
                        "write negative values as --primary=-30,-28")
    p.add_argument("--secondary", type=_floats, metavar="DEG[,DEG...]",
                   help="secondary angle (CRA+): one base angle, or one per frame")
    p.add_argument("--volume-size", type=int, nargs="+", metavar="N", help="voxels: one value or nx ny nz")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="MM", help="voxel size: one value or dx dy dz")
    p.add_argument("--angle-tolerance", type=float, default=0.5,
                   help="largest fill/mask angle difference accepted, degrees (default 0.5)")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {k: v for k, v in (("sid", args.sid), ("sod", args.sod), ("pixel_spacing", args.pixel_spacing),
                                   ("primary", args.primary), ("secondary", args.secondary)) if v is not None}
    return {"inputs": [str(Path(p).absolute()) for p in args.inputs],
            "subtracted": True if args.subtracted else None,
            "overrides": overrides, "volume_size": args.volume_size, "voxel_size": args.voxel_size,
            "angle_tolerance_deg": args.angle_tolerance}


def _triple(value: Any, name: str, kind: type) -> tuple | None:
    if value is None:
        return None
    vals = [value] if isinstance(value, (int, float)) else list(value)
    try:
        vals = [kind(v) for v in vals]
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be numbers, got {value!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(v > 0 and math.isfinite(v) for v in vals):
        raise BadInput(f"{name} must be one or three positive numbers, got {value!r}")
    return tuple(vals)


def default_grid(geometry: ConeBeamGeometry, volume_size: Any = None, voxel_size: Any = None) -> VolumeGrid:
    """Grid centred on the isocentre covering the detector field of view at the isocentre.

    Field of view: detector width (height) × SOD/SID across (along) the patient axis; voxel size by
    default the isocentre pixel size, coarsened so that no side exceeds 256 voxels.
    """
    h, w = geometry.det_shape
    sp = geometry.pixel_spacing.mean(axis=0)                         # (row, col) mm at the detector
    sod = float(np.mean(np.linalg.norm(geometry.source, axis=1)))
    mag = float(np.mean(geometry.sid)) / sod
    fov = np.array([w * sp[1], w * sp[1], h * sp[0]]) / mag          # x, y, z extents in mm
    size = _triple(volume_size, "volume_size", int)
    vox = _triple(voxel_size, "voxel_size", float)
    if vox is None and size is None:
        iso_pixel = float(min(sp)) / mag
        vox = (max(iso_pixel, float(fov.max()) / MAX_DEFAULT_VOXELS),) * 3
    if vox is None:
        vox = tuple(float(f / n) for f, n in zip(fov, size))
    if size is None:
        size = tuple(max(1, int(math.ceil(f / v - 1e-9))) for f, v in zip(fov, vox))
    return VolumeGrid.centered(size, vox)


def vpal_equivalent(geometry: ConeBeamGeometry) -> ConeBeamGeometry | None:
    """The VPAL/4DRGS circular geometry with the same rays as a DICOM geometry, columns mirrored.

    For a run about the patient axis (secondary angle 0, fixed SID/SOD/spacing), the DICOM frame at
    primary angle ``a`` is the VPAL/4DRGS frame at ``θ = a + 90°`` read right to left (the DICOM column
    step is the negative of ``transforms.json``'s ``u``), in the same LPS world. Writing that geometry
    with the frames flipped left–right lets tools that only read ``PrimaryAngle`` see the right rays.
    Returns None when the geometry has no such equivalent (e.g. a cranio-caudal tilt).
    """
    from ..formats.dicom_xa import xa_params_from_geometry

    try:
        p = xa_params_from_geometry(geometry)
    except BadInput:
        return None
    if p.flip_rows or p.flip_columns or not np.allclose(p.secondary_deg, 0.0, atol=1e-9):
        return None
    theta = np.deg2rad(p.primary_deg + 90.0)
    circ = ConeBeamGeometry.circular(theta, p.sod, p.sid, geometry.det_shape, p.pixel_spacing, times=geometry.times,
                                     meta={**geometry.meta, "columns": "mirrored from DICOM (VPAL/4DRGS convention)"})
    same = (np.allclose(circ.source, geometry.source, atol=1e-6) and np.allclose(circ.det_center, geometry.det_center,
                                                                                   atol=1e-6)
            and np.allclose(circ.det_u, -geometry.det_u, atol=1e-9) and np.allclose(circ.det_v, geometry.det_v, atol=1e-9))
    return circ if same else None


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..formats.dataset import DSADataset, write_dataset
    from ..formats.dicom_xa import XAOverrides
    from ..formats.xa_study import load_study, select_dsa

    inputs = job.get("inputs") or []
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    overrides = XAOverrides.from_dict(job.get("overrides"))
    reading = ctx.reporter.stage("read", 0.0, 0.6)
    study = load_study(inputs, overrides, progress=lambda f, m: reading(f, m))
    for msg in study.skipped:
        ctx.log(f"skipped: {msg}", "warning")
    ctx.progress(0.6, "dsa", f"{len(study.runs)} XA run(s)")
    subtracted = job.get("subtracted")
    signal = select_dsa(study.runs, subtracted=None if subtracted is None else bool(subtracted),
                        angle_tol_deg=float(job.get("angle_tolerance_deg", 0.5)))
    ctx.log(signal.how)
    for run_ in (signal.fill, signal.mask, signal.subtracted_run):
        if run_ is not None:
            for w in run_.warnings:
                ctx.log(f"{Path(run_.source_files[0]).name}: {w}", "warning")
    grid = default_grid(signal.geometry, job.get("volume_size"), job.get("voxel_size"))
    ctx.progress(0.7, "write", "dataset")

    raw = signal.fill is not None and signal.fill.intensity_relationship in ("LIN", "DISP") \
        and signal.fill.intensity_sign > 0 and signal.mask.intensity_sign > 0
    source = [r for r in (signal.fill, signal.mask, signal.subtracted_run) if r is not None]
    extra = {
        "source": "DICOM XA",
        "frame": "DICOM patient LPS, isocentre at the origin",
        "how": signal.how,
        "source_files": [f for r in source for f in r.source_files],
        "series_uids": [r.series_uid for r in source],
        "pixel_intensity_relationship": source[0].intensity_relationship,
        "times_s": signal.times_s.tolist(),
        "primary_deg": source[0].primary_deg.tolist(),
        "secondary_deg": source[0].secondary_deg.tolist(),
    }
    geometry = signal.geometry
    stacks = {"projections": signal.line_integrals, "mask_run": signal.mask.frames if raw else None,
              "fill_run": signal.fill.frames if raw else None}
    circ = vpal_equivalent(geometry)
    if circ is not None:
        geometry = circ
        stacks = {k: None if v is None else np.ascontiguousarray(v[:, :, ::-1]) for k, v in stacks.items()}
        extra["columns"] = "mirrored from the DICOM frames (VPAL/4DRGS convention: PrimaryAngle = primary + 90°)"
    else:
        ctx.log("the run is not a plain rotation about the patient axis: transforms.json PrimaryAngle alone cannot "
                "describe it; the exact per-frame geometry is stored in the dataset", "warning")
    ds = DSADataset(geometry=geometry, grid=grid, extra=extra, **stacks)
    written = write_dataset(ctx.out, ds)
    for rel in sorted(_relative(ctx.out, written)):
        role = "projections" if rel.endswith((".nii.gz", ".nii")) else "dataset"
        ctx.add_output(role, rel, _DESCRIPTIONS.get(Path(rel).name.split(".")[0], "dataset file"))
    ctx.extra["dataset"] = {"n_views": signal.geometry.n_views, "det_shape": list(signal.geometry.det_shape),
                            "volume_shape_zyx": list(grid.shape), "voxel_size_mm": grid.spacing.tolist(),
                            "how": signal.how}
    ctx.progress(1.0, "write", "done")


_DESCRIPTIONS = {
    "transforms": "geometry (VPAL/4DRGS transforms.json, DICOM LPS frame)",
    "proj": "DSA line integrals log(mask) - log(fill) >= 0, [frames, rows, cols]",
    "mask_run": "raw mask run frames (linear in intensity)",
    "fill_run": "raw contrast-filled run frames (linear in intensity)",
}


def _relative(root: Path, written: Any) -> list[str]:
    """Relative paths of the dataset files (``write_dataset``'s return value, or what is in ``root``)."""
    paths = written if isinstance(written, (list, tuple)) else None
    if paths is None:
        paths = [p for p in Path(root).rglob("*") if p.is_file()]
    out = []
    for p in paths:
        p = Path(p)
        out.append(str(p.relative_to(root) if p.is_absolute() else p))
    return out
