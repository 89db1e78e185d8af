"""VPAL / 4DRGS dataset folders: ``transforms.json`` + ``proj.nii.gz`` (or ``mask_run`` + ``fill_run``).

``transforms.json`` keys (``dsa_reconstruction.md`` §2.2–2.3): ``N_views``, ``sad``, ``sid``,
``proj_resolution`` [W, H], ``proj_spacing`` [sx, sy], ``volume_resolution`` [nx, ny, nz],
``volume_spacing``, ``volume_phy`` and ``frames[i].PrimaryAngle`` (radians) for a circular orbit
about z (:meth:`ConeBeamGeometry.circular`). Stacks are ``[N, H, W]`` in SimpleITK order, row 0 =
detector row 0. Frame ``i`` is at time ``i / N``.

Our additions, ignored by the anchors' loaders, make other runs exact:

* ``frames[i].angiorecon_geometry`` = ``{source, det_center, det_u, det_v}`` (mm): the exact rays of a
  non-circular (e.g. DICOM-derived, tilted) frame; present on every frame or on none;
* ``frames[i].angiorecon_time``: acquisition time when it is not ``i / N``;
* ``angiorecon_volume_affine``: the 4×4 IJK→world affine of a grid that is not axis-aligned and
  centred on the origin.

Every other key is kept in :attr:`DSADataset.extra` and written back (round trip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid
from .volume import read_stack, write_stack

TRANSFORMS = "transforms.json"
STACKS = {"projections": "proj.nii.gz", "mask_run": "mask_run.nii.gz", "fill_run": "fill_run.nii.gz"}
_OURS_TOP = ("N_views", "sad", "sid", "proj_resolution", "proj_spacing", "proj_phy", "volume_resolution",
             "volume_spacing", "volume_phy", "frames", "angiorecon_volume_affine")
_OURS_FRAME = ("PrimaryAngle", "angiorecon_geometry", "angiorecon_time")
_VEC_KEYS = ("source", "det_center", "det_u", "det_v")


@dataclass
class DSADataset:
    """One DSA run: geometry of all frames, the target grid, and the line integrals or raw runs."""

    geometry: ConeBeamGeometry
    grid: VolumeGrid
    projections: np.ndarray | None = None   #: [N, H, W] DSA line integrals
    mask_run: np.ndarray | None = None      #: [N, H, W] raw mask frames (positive)
    fill_run: np.ndarray | None = None      #: [N, H, W] raw contrast-filled frames (positive)
    extra: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None              #: where it was read from (for messages)

    def _name(self, key: str) -> str:
        return str(self.folder / STACKS[key]) if self.folder is not None else key

    def line_integrals(self) -> np.ndarray:
        """``[N, H, W]`` float32 DSA signal: the projections, or ``log(mask) − log(fill)`` clipped ≥ 0."""
        if self.projections is not None:
            return np.asarray(self.projections, dtype=np.float32)
        if self.mask_run is None or self.fill_run is None:
            raise BadInput("the dataset has neither proj.nii.gz nor both mask_run.nii.gz and fill_run.nii.gz")
        for key in ("mask_run", "fill_run"):
            arr = getattr(self, key)
            if np.any(arr <= 0):
                raise BadInput(f"{self._name(key)} has {int(np.sum(arr <= 0))} non-positive values; raw runs must be "
                               "positive intensities to take log(mask) - log(fill)")
        out = np.log(self.mask_run.astype(np.float64)) - np.log(self.fill_run.astype(np.float64))
        return np.maximum(out, 0).astype(np.float32)


def _get(d: dict, key: str, where: str, n: int | None = None) -> Any:
    if key not in d:
        raise BadInput(f"{where} lacks the key {key!r}")
    val = d[key]
    if n is not None:
        arr = np.asarray(val, dtype=np.float64).reshape(-1)
        if arr.size != n or not np.all(np.isfinite(arr)):
            raise BadInput(f"{where}: {key!r} must be {n} finite numbers, got {val!r}")
        return arr
    return val


def _number(d: dict, key: str, where: str) -> float:
    v = _get(d, key, where)
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadInput(f"{where}: {key!r} must be a number, got {v!r}") from None
    if not np.isfinite(x) or x <= 0:
        raise BadInput(f"{where}: {key!r} must be a positive finite number, got {v!r}")
    return x


def parse_transforms(meta: dict[str, Any], where: str = TRANSFORMS) -> tuple[ConeBeamGeometry, VolumeGrid, dict]:
    """Geometry, grid and the extra (unrecognised) keys of a parsed ``transforms.json``."""
    if not isinstance(meta, dict):
        raise BadInput(f"{where} must contain a JSON object")
    frames = _get(meta, "frames", where)
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise BadInput(f"{where}: 'frames' must be a non-empty list of objects")
    n = len(frames)
    if "N_views" in meta and int(meta["N_views"]) != n:
        raise BadInput(f"{where}: N_views = {meta['N_views']} but {n} frames are listed")
    w, h = (int(x) for x in _get(meta, "proj_resolution", where, 2))
    sx, sy = _get(meta, "proj_spacing", where, 2)
    exact = ["angiorecon_geometry" in f for f in frames]
    times = np.array([float(f.get("angiorecon_time", i / n)) for i, f in enumerate(frames)])
    if all(exact):
        vecs = {}
        for k in _VEC_KEYS:
            try:
                vecs[k] = np.array([f["angiorecon_geometry"][k] for f in frames], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                raise BadInput(f"{where}: every frames[i].angiorecon_geometry needs {k!r} as 3 numbers") from None
        geometry = ConeBeamGeometry(vecs["source"], vecs["det_center"], vecs["det_u"], vecs["det_v"], (h, w), times,
                                    {"source": where, "orbit": "per-frame exact geometry"})
    elif any(exact):
        raise BadInput(f"{where}: frames[i].angiorecon_geometry is on {sum(exact)} of {n} frames; need all or none")
    else:
        sad, sid = _number(meta, "sad", where), _number(meta, "sid", where)
        if sid <= sad:
            raise BadInput(f"{where}: sid ({sid}) must exceed sad ({sad})")
        angles = np.array([_get(f, "PrimaryAngle", f"{where} frames[{i}]", 1)[0] for i, f in enumerate(frames)])
        geometry = ConeBeamGeometry.circular(angles, sad, sid, (h, w), (sy, sx), times=times,
                                             meta={"source": where})
    res = _get(meta, "volume_resolution", where, 3)
    spacing = _get(meta, "volume_spacing", where, 3)
    if np.any(res < 1) or np.any(spacing <= 0):
        raise BadInput(f"{where}: volume_resolution and volume_spacing must be positive, got {res}, {spacing}")
    if "angiorecon_volume_affine" in meta:
        aff = np.asarray(meta["angiorecon_volume_affine"], dtype=np.float64)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise BadInput(f"{where}: angiorecon_volume_affine must be a finite 4x4 matrix")
        grid = VolumeGrid((int(res[2]), int(res[1]), int(res[0])), aff)
    else:
        if "volume_phy" in meta:
            phy = _get(meta, "volume_phy", where, 3)
            if not np.allclose(phy, res * spacing, rtol=1e-3):
                raise BadInput(f"{where}: volume_phy {phy.tolist()} != volume_resolution × volume_spacing "
                               f"{(res * spacing).tolist()}")
        grid = VolumeGrid.centered(res.astype(int), spacing)
    extra = {k: v for k, v in meta.items() if k not in _OURS_TOP}
    frame_extra = [{k: v for k, v in f.items() if k not in _OURS_FRAME} for f in frames]
    if any(frame_extra):
        extra["frames"] = frame_extra
    return geometry, grid, extra


def read_dataset(folder: str | Path, *, load_raw: bool = True) -> DSADataset:
    """Read a dataset folder; stacks that are absent are ``None`` (raw runs skipped if ``load_raw`` is False
    and ``proj.nii.gz`` exists)."""
    folder = Path(folder)
    tpath = folder / TRANSFORMS
    if not tpath.is_file():
        raise BadInput(f"{folder} is not a dataset folder: {TRANSFORMS} is missing")
    try:
        meta = json.loads(tpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read {tpath}: {exc}") from None
    geometry, grid, extra = parse_transforms(meta, str(tpath))
    stacks: dict[str, np.ndarray | None] = {}
    for key, name in STACKS.items():
        path = folder / name
        if not path.exists() or (key != "projections" and not load_raw and (folder / STACKS["projections"]).exists()):
            stacks[key] = None
            continue
        arr = read_stack(path)
        expected = (geometry.n_views, *geometry.det_shape)
        if arr.shape != expected:
            raise BadInput(f"{path} has shape {arr.shape} [frames, rows, cols] but {TRANSFORMS} describes {expected} "
                           "(N_views/frames, proj_resolution[1], proj_resolution[0])")
        if not np.all(np.isfinite(arr)):
            raise BadInput(f"{path} contains {int(np.sum(~np.isfinite(arr)))} NaN or infinite values")
        stacks[key] = arr
    if stacks["projections"] is None and (stacks["mask_run"] is None or stacks["fill_run"] is None):
        raise BadInput(f"{folder} has no {STACKS['projections']} and not both {STACKS['mask_run']} and "
                       f"{STACKS['fill_run']}")
    return DSADataset(geometry, grid, extra=extra, folder=folder, **stacks)


def transforms_dict(geometry: ConeBeamGeometry, grid: VolumeGrid, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``transforms.json`` content for ``geometry`` and ``grid`` (exact-geometry keys only when needed)."""
    n, (h, w) = geometry.n_views, geometry.det_shape
    sv, su = (float(x) for x in geometry.pixel_spacing[0])
    angles = np.arctan2(geometry.source[:, 1], geometry.source[:, 0])
    sad = float(np.mean(np.linalg.norm(geometry.source, axis=1)))
    sid = float(np.mean(geometry.sid))
    circ = ConeBeamGeometry.circular(angles, sad, sid, (h, w), (sv, su))
    exact = not all(np.allclose(getattr(circ, k), getattr(geometry, k), rtol=0, atol=1e-6) for k in _VEC_KEYS)
    extra = dict(extra or {})
    frame_extra = extra.pop("frames", None) or [{} for _ in range(n)]
    if len(frame_extra) != n:
        raise ValueError(f"extra['frames'] has {len(frame_extra)} entries for {n} frames")
    default_t = np.arange(n) / n
    frames = []
    for i in range(n):
        f: dict[str, Any] = {"file": f"frame_{i:04d}", **frame_extra[i], "PrimaryAngle": float(angles[i])}
        if exact:
            f["angiorecon_geometry"] = {k: getattr(geometry, k)[i].tolist() for k in _VEC_KEYS}
        if geometry.times is not None and abs(geometry.times[i] - default_t[i]) > 1e-9:
            f["angiorecon_time"] = float(geometry.times[i])
        frames.append(f)
    nz, ny, nx = grid.shape
    spacing = grid.spacing
    meta: dict[str, Any] = {
        **{k: v for k, v in extra.items() if k not in _OURS_TOP},
        "N_views": n, "sad": sad, "sid": sid,
        "proj_resolution": [w, h], "proj_spacing": [su, sv], "proj_phy": [w * su, h * sv],
        "volume_resolution": [nx, ny, nz], "volume_spacing": spacing.tolist(),
        "volume_phy": (np.array([nx, ny, nz]) * spacing).tolist(),
        "frames": frames,
    }
    centred = VolumeGrid.centered((nx, ny, nz), spacing)
    if not np.allclose(centred.affine, grid.affine, atol=1e-9):
        meta["angiorecon_volume_affine"] = grid.affine.tolist()
    return meta


def write_dataset(folder: str | Path, dataset: DSADataset, *, compress: bool = True) -> list[Path]:
    """Write ``transforms.json`` and the stacks that are present; returns the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = dataset.geometry
    expected = (g.n_views, *g.det_shape)
    written = []
    sp = tuple(float(x) for x in g.pixel_spacing[0])
    for key, name in STACKS.items():
        arr = getattr(dataset, key)
        if arr is None:
            continue
        if arr.shape != expected:
            raise BadInput(f"{key} has shape {arr.shape} but the geometry describes {expected}")
        written.append(write_stack(folder / name, arr, sp, compress=compress))
    meta = transforms_dict(g, dataset.grid, dataset.extra)
    tpath = folder / TRANSFORMS
    tmp = tpath.with_name(f".{TRANSFORMS}.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(tpath)
    written.append(tpath)
    return written
