"""Load the views of a few-view coronary study: pixels in the log domain (vessels bright) + geometry.

Inputs, one per view (mixing kinds is allowed when all views have the same size):

* **DICOM XA/XRF** (legacy single/multi-frame or Enhanced) through
  :func:`angiorecon.formats.dicom_xa.read_xa`; the geometry comes from the positioner tags via
  :meth:`ConeBeamGeometry.from_xa_angles` (DICOM patient LPS, isocentre at the origin) and a missing
  tag raises :class:`BadInput` naming the file and the tag. Pixels follow the reader's Pixel
  Intensity Relationship handling: LIN/DISP → ``−ln(intensity)``, LOG → ``−sign·value``, and
  pre-subtracted runs → their line integrals; pixels outside shutters get the frame's median.
* **PNG/TIFF/JPEG/BMP or NIfTI/NRRD/MHA** plus a JSON sidecar (default ``<image>.json`` or
  ``<stem>.json``) with ``primary_deg``, ``secondary_deg``, ``sid_mm``, ``sod_mm``,
  ``pixel_spacing_mm`` (one number or [row, column]) and optional ``pixel_relationship``: ``LIN``
  (default; display intensity, vessels dark), ``LOG`` (∝ ln intensity, vessels dark) or
  ``line_integral`` (already attenuation, vessels bright). Images are taken as DICOM shows them:
  rows toward the feet, columns toward the patient's left at AP.

Multi-frame runs need a frame index per view, or ``match_phase=True`` (see :func:`cardiac_cycles`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..errors import BadInput
from ..geometry import ConeBeamGeometry

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SIDECAR_KEYS = ("primary_deg", "secondary_deg", "sid_mm", "sod_mm", "pixel_spacing_mm")


@dataclass
class LoadedViews:
    """The views a coronary reconstruction starts from (one geometry entry per image)."""

    geometry: ConeBeamGeometry
    images: np.ndarray                  #: [V, H, W] float32, log domain (attenuation), vessels bright
    frames: list[int]                   #: frame index used in each source (0 for single images)
    sources: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- image files
def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_stack_file(path: str | Path) -> np.ndarray:
    """A 2D image (PNG/TIFF/…) as [1, H, W] in its own dtype (the bit depth sets the white level) or a
    NIfTI/NRRD/MHA image/stack as [frames, H, W] float32."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"image file {path} does not exist")
    suffix = _suffix(path)
    if suffix in IMAGE_SUFFIXES:
        from skimage import io

        try:
            arr = np.asarray(io.imread(path))
        except Exception as exc:  # noqa: BLE001 - imageio raises many types on corrupt files
            raise BadInput(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = arr[..., :3].mean(axis=-1).round().astype(arr.dtype)
        if arr.ndim != 2:
            raise BadInput(f"image {path} must be grey-scale 2D, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise BadInput(f"image {path} has non-numeric pixels ({arr.dtype})")
        return (arr.astype(np.uint8) if arr.dtype == bool else arr)[None]
    if suffix in VOLUME_SUFFIXES:
        from ..formats.volume import read_stack

        return read_stack(path)
    raise BadInput(f"unsupported image format {path.name!r}; use DICOM, "
                   f"{', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)}")


def read_image_file(path: str | Path) -> np.ndarray:
    """A single 2D image [H, W] float32 (a stack must hold exactly one frame)."""
    stack = read_stack_file(path)
    if stack.shape[0] != 1:
        raise BadInput(f"{path} holds {stack.shape[0]} frames; expected a single 2D image")
    return stack[0].astype(np.float32)


def png_to_log(pixels: np.ndarray, relationship: str = "LIN", max_value: float | None = None) -> np.ndarray:
    """Display pixels (vessels dark) → log-domain attenuation ``−ln(I / I_max)`` (vessels bright)."""
    v = np.asarray(pixels, dtype=np.float64)
    rel = relationship.upper()
    if rel == "LINE_INTEGRAL":
        return v.astype(np.float32)
    integer = np.issubdtype(np.asarray(pixels).dtype, np.integer)
    if max_value is None:
        dt = np.asarray(pixels).dtype
        max_value = float(np.iinfo(dt).max) if integer else float(max(v.max(), 1e-6))
    if rel == "LOG":
        return (max_value - v).astype(np.float32)
    if rel != "LIN":
        raise BadInput(f"pixel_relationship must be LIN, LOG or line_integral, got {relationship!r}")
    floor = 0.5 if integer else 1e-3 * max_value     # half a count: black pixels stay finite
    return (np.log(max_value) - np.log(np.maximum(v, floor))).astype(np.float32)


def _sidecar_path(image: Path, given: str | Path | None) -> Path:
    if given is not None:
        p = Path(given)
        if not p.is_file():
            raise BadInput(f"sidecar {p} for {image} does not exist")
        return p
    name = image.name
    stem = name[:-len(_suffix(image))] if _suffix(image) else image.stem
    for cand in (image.with_name(name + ".json"), image.with_name(stem + ".json")):
        if cand.is_file():
            return cand
    raise BadInput(f"{image} has no geometry sidecar: expected {image.name}.json or {stem}.json with "
                   f"{', '.join(SIDECAR_KEYS)}")


def read_sidecar(path: Path) -> dict[str, Any]:
    """Validated sidecar values: angles (deg), sid, sod (mm), spacing (row, col mm), relationship."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"sidecar {path} is not readable JSON: {exc}") from None
    if not isinstance(d, dict):
        raise BadInput(f"sidecar {path} must hold a JSON object with {', '.join(SIDECAR_KEYS)}")
    out: dict[str, Any] = {}
    for key in SIDECAR_KEYS:
        if key not in d:
            raise BadInput(f"sidecar {path} lacks '{key}' (needs {', '.join(SIDECAR_KEYS)})")
        vals = d[key] if isinstance(d[key], list) else [d[key]]
        try:
            nums = [float(x) for x in vals]
        except (TypeError, ValueError):
            raise BadInput(f"sidecar {path}: '{key}' must be a number, got {d[key]!r}") from None
        want = (1, 2) if key == "pixel_spacing_mm" else (1,)
        if len(nums) not in want or not all(math.isfinite(x) for x in nums):
            raise BadInput(f"sidecar {path}: '{key}' must be {' or '.join(map(str, want))} finite number(s), "
                           f"got {d[key]!r}")
        out[key] = nums
    sr, sc = (out["pixel_spacing_mm"] * 2)[:2]
    if sr <= 0 or sc <= 0:
        raise BadInput(f"sidecar {path}: 'pixel_spacing_mm' must be positive, got {d['pixel_spacing_mm']!r}")
    sid, sod = out["sid_mm"][0], out["sod_mm"][0]
    if not 0 < sod < sid:
        raise BadInput(f"sidecar {path}: need 0 < sod_mm < sid_mm, got sod_mm={sod:g}, sid_mm={sid:g}")
    rel = str(d.get("pixel_relationship", "LIN"))
    if rel.upper() not in ("LIN", "LOG", "LINE_INTEGRAL"):
        raise BadInput(f"sidecar {path}: 'pixel_relationship' must be LIN, LOG or line_integral, got {rel!r}")
    return {"primary_deg": out["primary_deg"][0], "secondary_deg": out["secondary_deg"][0], "sid": sid,
            "sod": sod, "pixel_spacing": (sr, sc), "relationship": rel.upper(),
            "max_value": _positive_or_none(d.get("max_value"), path)}


def _positive_or_none(value: Any, path: Path) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise BadInput(f"sidecar {path}: 'max_value' must be a positive number, got {value!r}")
    return v


# ------------------------------------------------------------------------------- cardiac phase
def cardiac_cycles(path: str | Path, times_s: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-frame position in the cardiac cycle as a continuous count of cycles (integer = R wave).

    Tags used, in this order (PS3.3):

    1. Enhanced XA/XRF: per-frame Cardiac Synchronization Sequence (0018,9118) > Nominal Cardiac
       Trigger Delay Time (0020,9153, ms after the R wave) with R-R Interval Time Nominal (0020,9251)
       (or Heart Rate (0018,1088)); a drop in the delay starts a new cycle.
    2. R Wave Pointer (0028,6040): the (1-based) frames at R-wave peaks, with the frame times; frames
       outside the first/last R wave are extrapolated with the mean R-R interval (or Heart Rate).
    3. Trigger Time (0018,1060, ms from the R wave to the first frame) with Heart Rate (0018,1088) or
       Nominal Interval (0018,1062, ms) and the frame times.

    Raises :class:`BadInput` naming the file when none of these is present.
    """
    from ..formats.dicom_xa import read_dicom_header

    where = str(path)
    ds = read_dicom_header(path, stop_before_pixels=True)
    t = np.asarray(times_s, dtype=np.float64)
    n = t.size

    def num(obj: Any, kw: str) -> float | None:
        v = getattr(obj, kw, None)
        if v is None or v == "":
            return None
        try:
            v = float(v[0] if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else v)
        except (TypeError, ValueError, IndexError):
            raise BadInput(f"{where}: {kw} is not a number ({v!r})") from None
        return v if math.isfinite(v) else None

    hr = num(ds, "HeartRate")
    rr_hr = 60.0 / hr if hr and hr > 0 else None
    per = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if per is not None and len(per) == n:
        delays, rrs = [], []
        for k in range(n):
            item = None
            for group in (per[k], shared[0] if shared else None):
                seq = getattr(group, "CardiacSynchronizationSequence", None) if group is not None else None
                if seq:
                    item = seq[0]
                    break
            if item is None:
                break
            delays.append(num(item, "NominalCardiacTriggerDelayTime"))
            rrs.append(num(item, "RRIntervalTimeNominal"))
        if len(delays) == n and all(d is not None for d in delays):
            rr = [r if r else (rr_hr * 1000 if rr_hr else None) for r in rrs]
            if all(r is not None and r > 0 for r in rr):
                frac = np.asarray(delays) / np.asarray(rr, dtype=np.float64)
                cycle = np.concatenate([[0], np.cumsum(np.diff(frac) < 0)])
                return cycle + frac, "CardiacSynchronizationSequence/NominalCardiacTriggerDelayTime"
    pointer = getattr(ds, "RWavePointer", None)
    if pointer is not None and len(pointer if not isinstance(pointer, int) else [pointer]) >= 1:
        idx = np.atleast_1d(np.asarray(pointer, dtype=np.int64)) - 1
        if np.any(idx < 0) or np.any(idx >= n):
            raise BadInput(f"{where}: RWavePointer (0028,6040) values {(idx + 1).tolist()} are outside frames 1..{n}")
        tr = np.unique(t[idx])
        rr = float(np.mean(np.diff(tr))) if tr.size >= 2 else rr_hr
        if rr is None or rr <= 0:
            raise BadInput(f"{where}: one R wave in RWavePointer (0028,6040) and no HeartRate (0018,1088); "
                           f"cannot tell the cardiac phase of the other frames")
        cyc = np.interp(t, tr, np.arange(tr.size, dtype=np.float64)) if tr.size >= 2 else np.zeros(n)
        cyc = np.where(t < tr[0], (t - tr[0]) / rr, cyc)
        cyc = np.where(t > tr[-1], tr.size - 1 + (t - tr[-1]) / rr, cyc)
        return cyc, "RWavePointer"
    trigger = num(ds, "TriggerTime")
    nominal = num(ds, "NominalInterval")
    rr = rr_hr if rr_hr else (nominal / 1000.0 if nominal and nominal > 0 else None)
    if trigger is not None and rr is not None:
        return (trigger / 1000.0 + t) / rr, "TriggerTime+HeartRate"
    raise BadInput(f"{where}: cannot match cardiac phase: no ECG tags (RWavePointer (0028,6040), "
                   f"CardiacSynchronizationSequence (0018,9118), or TriggerTime (0018,1060) with HeartRate "
                   f"(0018,1088)/NominalInterval (0018,1062)); give a frame index for this view instead")


def contrast_score(image: np.ndarray) -> float:
    """How well-filled a log-domain frame looks: bright thin structure above its local background."""
    hp = image - ndimage.gaussian_filter(image, 8.0)
    return float(np.percentile(hp, 99.5) - np.median(hp))


def phase_frame(cycles: np.ndarray, target: float, log_frames: np.ndarray, where: str) -> int:
    """Frame nearest to ``target`` phase in each cycle; among those the best-filled one."""
    steps = np.diff(cycles)
    tol = max(0.75 * float(np.median(steps)) if steps.size else 0.5, 0.05)
    cands = []
    for m in range(int(np.floor(cycles.min())) - 1, int(np.ceil(cycles.max())) + 1):
        k = int(np.argmin(np.abs(cycles - (m + target))))
        if abs(cycles[k] - (m + target)) <= tol and k not in cands:
            cands.append(k)
    if not cands:
        raise BadInput(f"{where}: no frame within {tol:.2f} cycles of cardiac phase {target:.2f}")
    return max(cands, key=lambda k: contrast_score(log_frames[k]))


# ------------------------------------------------------------------------------- loading
def _dicom_log_frames(run: Any) -> np.ndarray:
    from ..formats.dicom_xa import log_intensity, subtracted_line_integrals

    img = subtracted_line_integrals(run) if run.subtracted else -log_intensity(run)
    valid = np.asarray(run.valid_mask)
    if not valid.all():
        img = img.copy()
        for k in range(img.shape[0]):
            img[k][~valid[k]] = np.median(img[k][valid[k]])
    return img.astype(np.float32)


def _frame_index(frames: Sequence[int | None] | None, i: int, n: int, where: str) -> int | None:
    if frames is None:
        return None
    f = frames[i]
    if f is None:
        return None
    if not isinstance(f, (int, np.integer)) or not 0 <= int(f) < n:
        raise BadInput(f"{where}: frame index {f!r} is outside 0..{n - 1}")
    return int(f)


def load_views(paths: Sequence[str | Path], frames: Sequence[int | None] | None = None, *,
               match_phase: bool = False, sidecars: Sequence[str | Path | None] | None = None,
               phase: float = 0.0) -> LoadedViews:
    """Read one view per path (see module doc) into log-domain images with their geometry.

    ``frames``: one 0-based frame index per view (``None`` entries allowed with ``match_phase``).
    ``match_phase``: for views without an index, pick the frame at the same cardiac phase — the
    phase of the first indexed multi-frame DICOM view that has ECG tags, else ``phase`` (fraction of
    the R-R interval, 0 = R wave ≈ end-diastole) — and, among cycles, the best-filled frame.
    Single images and single-frame files always use their only frame.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise BadInput("no views given: pass two or more XA DICOM files or images with sidecars")
    if frames is not None and len(frames) != len(paths):
        raise BadInput(f"{len(frames)} frame indices for {len(paths)} views; give one per view")
    if sidecars is not None and len(sidecars) != len(paths):
        raise BadInput(f"{len(sidecars)} sidecars for {len(paths)} views; give one per view (or none)")
    if not 0.0 <= phase < 1.0:
        raise BadInput(f"cardiac phase must be in [0, 1), got {phase}")
    stacks: list[np.ndarray] = []
    geoms: list[ConeBeamGeometry] = []
    cycles: list[tuple[np.ndarray, str] | None] = []
    picked: list[int | None] = []
    warns: list[str] = []
    for i, p in enumerate(paths):
        if not p.is_file():
            raise BadInput(f"view {i + 1}: {p} does not exist")
        suffix = _suffix(p)
        if suffix in IMAGE_SUFFIXES + VOLUME_SUFFIXES:
            sc = read_sidecar(_sidecar_path(p, sidecars[i] if sidecars is not None else None))
            raw = read_stack_file(p)
            stack = np.stack([png_to_log(raw[k], sc["relationship"], sc["max_value"]) for k in range(raw.shape[0])])
            n = stack.shape[0]
            g = ConeBeamGeometry.from_xa_angles([sc["primary_deg"]] * n, [sc["secondary_deg"]] * n, sc["sid"],
                                                sc["sod"], sc["pixel_spacing"], stack.shape[1:],
                                                meta={"source_file": str(p)})
            cyc = None
        else:
            from ..formats.dicom_xa import read_xa

            run = read_xa(p)
            warns += [f"{p.name}: {w}" for w in run.warnings]
            stack, g = _dicom_log_frames(run), run.geometry
            n = stack.shape[0]
            cyc = cardiac_cycles(p, run.times_s) if match_phase and n > 1 and \
                _frame_index(frames, i, n, str(p)) is None else None
        f = _frame_index(frames, i, n, str(p))
        if f is None and n == 1:
            f = 0
        if f is None and not match_phase:
            raise BadInput(f"{p} holds {n} frames: give a frame index for this view or use match_phase")
        if f is None and cyc is None:
            raise BadInput(f"{p} holds {n} frames but no frame times/ECG tags to match the cardiac phase; "
                           f"give a frame index for this view")
        stacks.append(stack)
        geoms.append(g)
        cycles.append(cyc)
        picked.append(f)
    phases: dict[int, float] = {}
    target = phase
    if match_phase:
        for i, f in enumerate(picked):
            if f is not None and cycles[i] is None and stacks[i].shape[0] > 1:
                try:
                    cycles[i] = cardiac_cycles(paths[i], geoms[i].times if geoms[i].times is not None
                                               else np.arange(stacks[i].shape[0], dtype=float))
                except BadInput:
                    continue
                target = float(cycles[i][0][f] % 1.0)
                break
        for i, f in enumerate(picked):
            if f is None:
                picked[i] = phase_frame(cycles[i][0], target, stacks[i], str(paths[i]))
            if cycles[i] is not None:
                phases[i] = float(cycles[i][0][picked[i]] % 1.0)
    shapes = {s.shape[1:] for s in stacks}
    if len(shapes) != 1:
        raise BadInput("views differ in size: " + ", ".join(f"{p.name} {s.shape[2]}x{s.shape[1]}"
                                                           for p, s in zip(paths, stacks)) +
                       "; resample them to one detector size first")
    sub = [g.subset([f]) for g, f in zip(geoms, picked)]
    geometry = ConeBeamGeometry(np.vstack([g.source for g in sub]), np.vstack([g.det_center for g in sub]),
                                np.vstack([g.det_u for g in sub]), np.vstack([g.det_v for g in sub]),
                                tuple(stacks[0].shape[1:]), None, {
                                    "frame": "DICOM patient LPS, isocentre at origin",
                                    "primary_deg": [float(g.meta.get("primary_deg", [np.nan])[0]) for g in sub],
                                    "secondary_deg": [float(g.meta.get("secondary_deg", [np.nan])[0]) for g in sub],
                                    "sources": [str(p) for p in paths]})
    images = np.stack([s[f] for s, f in zip(stacks, picked)]).astype(np.float32)
    meta: dict[str, Any] = {"warnings": warns}
    if match_phase:
        meta["cardiac_phase"] = {str(i): ph for i, ph in phases.items()}
        meta["phase_source"] = {str(i): c[1] for i, c in enumerate(cycles) if c is not None}
        meta["target_phase"] = target
    return LoadedViews(geometry, images, [int(f) for f in picked], [str(p) for p in paths], meta)


def vessel_pixels_at_edge(masks: np.ndarray, margin_px: int = 2, level: float = 0.5) -> list[int]:
    """Per view, the number of vessel-mask pixels within ``margin_px`` of the image border.

    Why: a vessel that runs off one detector continues where that view cannot see it. Two views
    cannot place that part in 3D, and its image in the other views can only be matched to an
    unrelated vessel there, a ghost (simulated seeds 11 and 13 keep such ghosts 17–25 mm off).
    """
    b = np.asarray(masks) >= level
    border = np.zeros(b.shape[1:], dtype=bool)
    m = max(int(margin_px), 1)                  # at least 1: a [-0:] slice would be the whole image
    border[:m] = border[-m:] = True
    border[:, :m] = border[:, -m:] = True
    return [int(np.count_nonzero(v & border)) for v in b]
