"""Cone-beam C-arm geometry and voxel grids: the one description every operator consumes.

A :class:`ConeBeamGeometry` stores, per view ``n``, the source position ``source[n]``, the detector
centre ``det_center[n]`` and the world vectors ``det_u[n]`` / ``det_v[n]`` that step one pixel
along a detector row (column index + 1) and down a column (row index + 1), in millimetres.
Pixel ``(row r, col c)`` has its centre at::

    det_center + (c - (W - 1) / 2) * det_u + (r - (H - 1) / 2) * det_v

so pixel ``(0, 0)`` is ``det_center - (W/2 - 1/2) u - (H/2 - 1/2) v`` exactly as in the VPAL /
4DRGS convention (``dsa_reconstruction.md`` §2.3). Everything else (3×4 projection matrices, TIGRE
or RTK parameters, DICOM angles) is derived from, or converted into, these vectors.

A :class:`VolumeGrid` is a numpy ``[z, y, x]`` array's geometry: shape and a 4×4 IJK→world
affine with ``(i, j, k) = (x, y, z)`` indices, so ITK/SimpleITK physical coordinates of a written
volume equal engine world coordinates.

Units: millimetres and radians (degrees only at the DICOM / UI boundary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import BadInput

Array = np.ndarray


def _as_views(a: Any, n: int | None, name: str) -> Array:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise BadInput(f"geometry field {name} must have shape (N, 3), got {arr.shape}")
    if n is not None and arr.shape[0] == 1 and n > 1:
        arr = np.repeat(arr, n, axis=0)
    return arr


@dataclass(frozen=True, eq=False)
class ConeBeamGeometry:
    """Per-view cone-beam geometry (see module docstring for the pixel convention)."""

    source: Array                 #: (N, 3) source positions, mm
    det_center: Array             #: (N, 3) detector centres (centre of the pixel grid), mm
    det_u: Array                  #: (N, 3) one pixel step along a row (column + 1), mm
    det_v: Array                  #: (N, 3) one pixel step down a column (row + 1), mm
    det_shape: tuple[int, int]    #: (rows H, cols W)
    times: Array | None = None    #: (N,) acquisition time of each view (s or normalised), optional
    meta: dict[str, Any] = field(default_factory=dict)  #: provenance (angles, SID, …), JSON-able

    def __post_init__(self) -> None:
        n = np.asarray(self.source).reshape(-1, 3).shape[0]
        for name in ("source", "det_center", "det_u", "det_v"):
            object.__setattr__(self, name, _as_views(getattr(self, name), n, name))
        shapes = {getattr(self, k).shape[0] for k in ("source", "det_center", "det_u", "det_v")}
        if len(shapes) != 1:
            raise BadInput(f"geometry fields disagree on the number of views: {sorted(shapes)}")
        h, w = (int(x) for x in self.det_shape)
        if h < 1 or w < 1:
            raise BadInput(f"detector shape must be positive, got {self.det_shape}")
        object.__setattr__(self, "det_shape", (h, w))
        if self.times is not None:
            t = np.asarray(self.times, dtype=np.float64).reshape(-1)
            if t.shape[0] != self.n_views:
                raise BadInput(f"{t.shape[0]} view times for {self.n_views} views")
            object.__setattr__(self, "times", t)
        for name in ("source", "det_center", "det_u", "det_v"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise BadInput(f"geometry field {name} contains NaN or infinite values")

    # ------------------------------------------------------------------ basic properties
    @property
    def n_views(self) -> int:
        return int(self.source.shape[0])

    @property
    def pixel00(self) -> Array:
        """(N, 3) centre of pixel (row 0, col 0)."""
        h, w = self.det_shape
        return self.det_center - (w / 2 - 0.5) * self.det_u - (h / 2 - 0.5) * self.det_v

    @property
    def pixel_spacing(self) -> Array:
        """(N, 2) pixel size (row step |v|, column step |u|) in mm at the detector."""
        return np.stack([np.linalg.norm(self.det_v, axis=1), np.linalg.norm(self.det_u, axis=1)], axis=1)

    @property
    def sid(self) -> Array:
        """(N,) source-to-detector distance (perpendicular to the detector plane), mm."""
        n = self.det_normal
        return np.abs(np.einsum("ij,ij->i", self.det_center - self.source, n))

    @property
    def det_normal(self) -> Array:
        """(N, 3) unit detector normal pointing from the source side to the detector (away from source)."""
        n = np.cross(self.det_u, self.det_v)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        sign = np.sign(np.einsum("ij,ij->i", self.det_center - self.source, n))
        return n * sign[:, None]

    def pixel_centers(self, view: int) -> Array:
        """(H, W, 3) world positions of the pixel centres of one view."""
        h, w = self.det_shape
        r = np.arange(h)[:, None, None]
        c = np.arange(w)[None, :, None]
        return self.pixel00[view] + c * self.det_u[view] + r * self.det_v[view]

    # ------------------------------------------------------------------ projection matrices
    def projection_matrices(self) -> Array:
        """(N, 3, 4) matrices P with ``P @ [x, y, z, 1] ∝ [col, row, 1]`` (pixel indices, 0-based centres).

        The third homogeneous coordinate is positive for points between source and detector and
        equals (distance along the detector normal from the source) / SID, i.e. a depth.
        """
        a = np.stack([self.det_u, self.det_v, self.pixel00 - self.source], axis=2)  # (N,3,3) columns
        a_inv = np.linalg.inv(a)
        p = np.concatenate([a_inv, -np.einsum("nij,nj->ni", a_inv, self.source)[:, :, None]], axis=2)
        return p

    def project_points(self, points: Array) -> Array:
        """Project world points (M, 3) into every view: returns (N, M, 2) as (col, row)."""
        return self.project_points_with_depth(points)[0]

    def project_points_with_depth(self, points: Array) -> tuple[Array, Array]:
        """(N, M, 2) pixel (col, row) of world points (M, 3) in every view, and (N, M) their depth w.

        ``w`` is the homogeneous coordinate of :meth:`projection_matrices`: (distance from the source
        along the detector normal) / SID, so a length ℓ mm at the point spans ℓ / (w · pixel spacing)
        pixels — what a lumen radius or a chord needs beside the position.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        p = self.projection_matrices()
        q = np.einsum("nij,mj->nmi", p[:, :, :3], pts) + p[:, None, :, 3]
        return q[..., :2] / q[..., 2:3], q[..., 2]

    # ------------------------------------------------------------------ selection
    def subset(self, indices: Sequence[int] | Array) -> "ConeBeamGeometry":
        """Geometry of the views ``indices`` (in the given order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.n_views or idx.max() >= self.n_views):
            raise BadInput(f"view indices must be in [0, {self.n_views - 1}], got {idx.min()}..{idx.max()}")
        meta = {k: (np.asarray(v)[idx].tolist() if _is_per_view(v, self.n_views) else v)
                for k, v in self.meta.items()}
        meta["view_indices"] = [int(i) for i in (np.asarray(self.meta["view_indices"])[idx]
                                                if "view_indices" in self.meta else idx)]
        return ConeBeamGeometry(self.source[idx], self.det_center[idx], self.det_u[idx], self.det_v[idx],
                                self.det_shape, None if self.times is None else self.times[idx], meta)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": "angiorecon.ConeBeamGeometry/1",
            "det_shape": list(self.det_shape),
            "source": self.source.tolist(),
            "det_center": self.det_center.tolist(),
            "det_u": self.det_u.tolist(),
            "det_v": self.det_v.tolist(),
            "meta": _jsonable(self.meta),
        }
        if self.times is not None:
            d["times"] = self.times.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConeBeamGeometry":
        try:
            return cls(np.asarray(d["source"]), np.asarray(d["det_center"]), np.asarray(d["det_u"]),
                       np.asarray(d["det_v"]), tuple(d["det_shape"]),
                       None if d.get("times") is None else np.asarray(d["times"]), dict(d.get("meta", {})))
        except KeyError as exc:
            raise BadInput(f"geometry JSON lacks the key {exc.args[0]!r}") from None

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load_json(cls, path: str | Path) -> "ConeBeamGeometry":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"cannot read geometry {path}: {exc}") from None
        return cls.from_dict(d)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def circular(cls, angles: Sequence[float] | Array, dso: float, dsd: float,
                 det_shape: tuple[int, int], det_spacing: tuple[float, float] | float,
                 det_offset: tuple[float, float] = (0.0, 0.0), times: Array | None = None,
                 meta: dict[str, Any] | None = None) -> "ConeBeamGeometry":
        """Circular orbit about the world z axis, VPAL/4DRGS/ASTRA convention (§2.3).

        Source at ``dso·(cos θ, sin θ, 0)``, detector centre at ``-(dsd - dso)·(cos θ, sin θ, 0)``
        plus ``det_offset`` = (row offset along v, column offset along u) in mm,
        ``u = su·(-sin θ, cos θ, 0)``, ``v = sv·(0, 0, -1)``. ``det_spacing`` is (row, col) mm
        (TIGRE's ``dDetector`` order) or a scalar; ``det_shape`` is (rows, cols).
        """
        th = np.asarray(angles, dtype=np.float64).reshape(-1)
        sv, su = (det_spacing, det_spacing) if np.isscalar(det_spacing) else det_spacing
        c, s = np.cos(th), np.sin(th)
        radial = np.stack([c, s, np.zeros_like(th)], axis=1)
        u_dir = np.stack([-s, c, np.zeros_like(th)], axis=1)
        v_dir = np.tile([0.0, 0.0, -1.0], (th.size, 1))
        source = dso * radial
        center = -(dsd - dso) * radial + det_offset[0] * v_dir + det_offset[1] * u_dir
        m = {"orbit": "circular", "angles_rad": th.tolist(), "dso": float(dso), "dsd": float(dsd)}
        m.update(meta or {})
        return cls(source, center, su * u_dir, sv * v_dir, tuple(det_shape), times, m)

    @classmethod
    def from_xa_angles(cls, primary_deg: Sequence[float] | Array, secondary_deg: Sequence[float] | Array,
                       sid: float | Array, sod: float | Array, pixel_spacing: tuple[float, float],
                       det_shape: tuple[int, int], times: Array | None = None,
                       meta: dict[str, Any] | None = None) -> "ConeBeamGeometry":
        """C-arm geometry from DICOM XA positioner values, in the DICOM patient frame (LPS, isocentre at 0).

        PS3.3 C.8.7.5.1.2: primary angle ``a`` (LAO +, RAO −), secondary ``b`` (CRA +, CAU −).
        At ``a = b = 0`` the detector faces the patient's chest (AP view): source behind the patient.
        The unit vector from the isocentre to the detector is
        ``d = (sin a·cos b, −cos a·cos b, sin b)`` (LAO moves the detector to the patient's left = +x,
        anterior = −y, cranial = +z). Source at ``−SOD·d``, detector centre at ``(SID − SOD)·d``.
        Image rows run toward the patient's feet and columns toward the patient's left at AP
        (heads-up display), i.e. at AP ``u = (+1, 0, 0)`` scaled and ``v = (0, 0, −1)`` scaled; for
        other angles both are carried along by the same rotation. ``pixel_spacing`` is DICOM
        Imager Pixel Spacing (row spacing, column spacing) at the detector.
        """
        a = np.deg2rad(np.asarray(primary_deg, dtype=np.float64).reshape(-1))
        b = np.deg2rad(np.asarray(secondary_deg, dtype=np.float64).reshape(-1))
        if a.shape != b.shape:
            raise BadInput(f"{a.size} primary angles but {b.size} secondary angles")
        n = a.size
        sid_a = np.broadcast_to(np.asarray(sid, dtype=np.float64), (n,))
        sod_a = np.broadcast_to(np.asarray(sod, dtype=np.float64), (n,))
        if np.any(sod_a <= 0) or np.any(sid_a <= sod_a):
            raise BadInput(f"need 0 < SOD < SID, got SOD={sod_a.min():g}..{sod_a.max():g}, "
                           f"SID={sid_a.min():g}..{sid_a.max():g} mm")
        ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
        d = np.stack([sa * cb, -ca * cb, sb], axis=1)
        # Rotation R(a, b) carries the AP frame (u0 = +x, v0 = -z, d0 = -y) to the view frame:
        # first tilt by b about the x axis (cranial), then rotate by a about the z (feet-head) axis.
        u_dir = np.stack([ca, sa, np.zeros(n)], axis=1)
        v_dir = np.stack([sa * sb, -ca * sb, -cb], axis=1)
        sr, sc = pixel_spacing
        source = -sod_a[:, None] * d
        center = (sid_a - sod_a)[:, None] * d
        m = {"frame": "DICOM patient LPS, isocentre at origin",
             "primary_deg": np.rad2deg(a).tolist(), "secondary_deg": np.rad2deg(b).tolist(),
             "sid": sid_a.tolist(), "sod": sod_a.tolist(), "imager_pixel_spacing": [float(sr), float(sc)]}
        m.update(meta or {})
        return cls(source, center, sc * u_dir, sr * v_dir, tuple(det_shape), times, m)


@dataclass(frozen=True, eq=False)
class VolumeGrid:
    """Geometry of a numpy ``[z, y, x]`` volume: shape plus 4×4 IJK→world affine.

    ``affine @ [i, j, k, 1]`` with ``i`` the x (last-axis) index gives the world position (mm) of the
    voxel centre. Written volumes use this affine as ITK spacing/origin/direction.
    """

    shape: tuple[int, int, int]   #: (nz, ny, nx)
    affine: Array                 #: (4, 4) IJK→world

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise BadInput(f"affine must be 4x4, got {aff.shape}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise BadInput("affine is singular (zero spacing?)")
        object.__setattr__(self, "affine", aff)

    @classmethod
    def centered(cls, shape_xyz: Sequence[int], spacing_xyz: Sequence[float] | float,
                 center: Sequence[float] = (0.0, 0.0, 0.0)) -> "VolumeGrid":
        """Axis-aligned grid centred on ``center``: voxel centres at ``-phy/2 + spacing/2 + i·spacing``.

        This is the ``volume_resolution`` / ``volume_spacing`` grid of a VPAL/4DRGS
        ``transforms.json`` (shapes and spacings given in x, y, z order as there).
        """
        n = np.asarray(shape_xyz, dtype=np.int64).reshape(3)
        sp = np.broadcast_to(np.asarray(spacing_xyz, dtype=np.float64), (3,))
        aff = np.eye(4)
        aff[:3, :3] = np.diag(sp)
        aff[:3, 3] = np.asarray(center, dtype=np.float64) - n * sp / 2 + sp / 2
        return cls((int(n[2]), int(n[1]), int(n[0])), aff)

    @property
    def spacing(self) -> Array:
        """(3,) voxel size along i, j, k (x, y, z), mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> Array:
        """(3,) world position of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> Array:
        """(3, 3) unit direction cosines (columns = i, j, k axes)."""
        return self.affine[:3, :3] / self.spacing[None, :]

    @property
    def is_axis_aligned(self) -> bool:
        return bool(np.allclose(self.direction, np.diag(np.sign(np.diag(self.direction))), atol=1e-9))

    @property
    def center(self) -> Array:
        mid = (np.array(self.shape[::-1]) - 1) / 2
        return self.affine[:3, :3] @ mid + self.affine[:3, 3]

    def world_to_index(self, points: Array) -> Array:
        """World (M, 3) → continuous (i, j, k) indices (M, 3)."""
        inv = np.linalg.inv(self.affine)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def index_to_world(self, ijk: Array) -> Array:
        ijk = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def voxel_centers(self) -> Array:
        """(nz, ny, nx, 3) world coordinates of all voxel centres (for small grids)."""
        nz, ny, nx = self.shape
        k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3)
        return self.index_to_world(ijk).reshape(nz, ny, nx, 3)

    def to_dict(self) -> dict[str, Any]:
        return {"shape_zyx": list(self.shape), "affine": self.affine.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VolumeGrid":
        return cls(tuple(d["shape_zyx"]), np.asarray(d["affine"]))


def uniform_view_indices(n_views: int, k: int) -> Array:
    """The anchors' sparse-view choice: ``floor(arange(0, N, N/K))`` (uniform in frame index).

    For N = 133, K = 30 this gives 0, 4, 8, 13, 17, 22, … 128 (``dsa_reconstruction.md`` §0).
    """
    if not 1 <= k <= n_views:
        raise BadInput(f"cannot choose {k} views out of {n_views}")
    idx = np.floor(np.arange(0, n_views, n_views / k)).astype(np.int64)[:k]
    return idx


def select_views(n_views: int, views: int | Sequence[int] | None) -> Array:
    """View indices from a count (uniform), an explicit list, or ``None`` (all views)."""
    if views is None:
        return np.arange(n_views)
    if isinstance(views, (int, np.integer)):
        return uniform_view_indices(n_views, int(views))
    idx = np.asarray(list(views), dtype=np.int64)
    if idx.size == 0:
        raise BadInput("empty view list")
    if idx.min() < 0 or idx.max() >= n_views:
        raise BadInput(f"view indices must be in [0, {n_views - 1}], got {idx.min()}..{idx.max()}")
    if np.unique(idx).size != idx.size:
        raise BadInput("view list contains duplicates")
    return idx


def _is_per_view(v: Any, n: int) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and len(v) == n and n > 1


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
