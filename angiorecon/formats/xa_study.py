"""A DICOM XA study as a set of runs, and the DSA signal made from it.

A study is whatever the user points at: folders (searched recursively) and/or files. Each XA/XRF
instance is one run (:class:`~angiorecon.formats.dicom_xa.XARun`). :func:`select_dsa` then finds
the DSA signal (line integrals ``log(mask) − log(fill)`` clipped at 0) in one of two ways:

* **pre-subtracted run**: a run with Recommended Viewing Mode ``SUB`` or ``SUBTRACTION`` in Image
  Type, or any run when the caller says ``subtracted=True``; its pixels are turned into line
  integrals by :func:`~angiorecon.formats.dicom_xa.subtracted_line_integrals`;
* **fill/mask pair**: two unsubtracted runs with the same frame count, frame size and per-frame
  angles (within ``angle_tol_deg``). Which is the mask: a Series Description / Image Type that says
  ``MASK`` (or ``FILL`` / ``CONTRAST`` for the other) decides; otherwise the run with the higher
  mean log-intensity is the mask, because contrast agent only removes intensity (the filled run is
  darker on LIN data). For LOG data the difference of the log values is the signal directly.

Anything ambiguous or inconsistent is a :class:`~angiorecon.errors.BadInput` that says which runs
and which property disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry
from .dicom_xa import (XAOverrides, XARun, check_xa, intensity_floor, log_intensity, read_dicom_header,
                       read_xa, subtracted_line_integrals)

MASK_HINTS = ("MASK", "NATIVE", "PRE-CONTRAST", "PRECONTRAST")
FILL_HINTS = ("FILL", "CONTRAST", "DSA")


@dataclass(eq=False)
class XAStudy:
    """The XA runs found in the inputs, plus what was skipped and why."""

    runs: list[XARun]
    skipped: list[str] = field(default_factory=list)


@dataclass(eq=False)
class DSASignal:
    """Line integrals ready for reconstruction, with the geometry of the frames they belong to."""

    line_integrals: np.ndarray          #: [N, H, W] float32, ≥ 0
    geometry: ConeBeamGeometry          #: DICOM LPS frame (the fill run's, or the subtracted run's)
    times_s: np.ndarray                 #: (N,)
    valid_mask: np.ndarray              #: [N, H, W] bool
    fill: XARun | None = None
    mask: XARun | None = None
    subtracted_run: XARun | None = None
    how: str = ""                       #: one line saying how the signal was obtained


def find_files(inputs: Sequence[str | Path]) -> list[tuple[Path, bool, int]]:
    """All candidate files: (path, given explicitly, input index). Folders are searched recursively."""
    out: list[tuple[Path, bool, int]] = []
    if not inputs:
        raise BadInput("no input given: pass DICOM files or folders")
    for index, item in enumerate(inputs):
        p = Path(item)
        if not p.exists():
            raise BadInput(f"input {p} does not exist")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not files:
                raise BadInput(f"folder {p} is empty")
            out.extend((f, False, index) for f in files if f.name.upper() != "DICOMDIR")
        else:
            out.append((p, True, index))
    return out


def load_study(inputs: Sequence[str | Path], overrides: XAOverrides | None = None,
               progress: Callable[[float, str], None] | None = None) -> XAStudy:
    """Read every XA/XRF instance in ``inputs`` (in input order; a folder's runs by study/series/instance).

    Files named explicitly must be XA/XRF (else :class:`BadInput` naming their SOP class); files met
    while searching folders are skipped when they are not DICOM or not XA, and listed in ``skipped``.
    """
    files = find_files(inputs)
    runs: list[tuple[int, XARun]] = []
    skipped: list[str] = []
    for i, (path, explicit, index) in enumerate(files):
        if progress is not None:
            progress(i / len(files), f"reading {path.name}")
        if not explicit:
            try:
                header = read_dicom_header(path, stop_before_pixels=True)
                check_xa(header, str(path))
            except BadInput as exc:
                skipped.append(str(exc))
                continue
        runs.append((index, read_xa(path, overrides)))
    if not runs:
        detail = "; ".join(skipped[:3]) + (f"; … {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise BadInput(f"no XA/XRF image found in {', '.join(str(i) for i in inputs)}"
                       + (f" ({detail})" if detail else ""))
    # Inputs keep their order (two-view input: view 1, view 2); a folder's runs are grouped by
    # study, series and instance.
    runs.sort(key=lambda ir: (ir[0], ir[1].study_uid, ir[1].series_uid, ir[1].instance_number or 0,
                              ir[1].source_files[0]))
    return XAStudy([r for _, r in runs], skipped)


def _hint(run: XARun) -> str:
    """'mask', 'fill' or '' from the series description and image type."""
    text = " ".join([run.series_description.upper(), *run.image_type])
    if any(h in text for h in MASK_HINTS):
        return "mask"
    if any(h in text for h in FILL_HINTS):
        return "fill"
    return ""


def pair_mismatch(a: XARun, b: XARun, angle_tol_deg: float = 0.5) -> str:
    """Why two runs cannot be a fill/mask pair ('' when they can)."""
    if a.n_frames != b.n_frames:
        return f"different frame counts ({a.n_frames} vs {b.n_frames})"
    if a.frames.shape[1:] != b.frames.shape[1:]:
        return f"different frame sizes ({a.frames.shape[1:]} vs {b.frames.shape[1:]})"
    for name, x, y in (("primary", a.primary_deg, b.primary_deg), ("secondary", a.secondary_deg, b.secondary_deg)):
        diff = np.abs(x - y)
        k = int(np.argmax(diff))
        if diff[k] > angle_tol_deg:
            return (f"different {name} angles (by {diff[k]:.2f}° at frame {k + 1}: {x[k]:.2f}° vs {y[k]:.2f}°; "
                    f"tolerance {angle_tol_deg}°)")
    for name, x, y in (("SID", a.sid, b.sid), ("SOD", a.sod, b.sod)):
        if np.max(np.abs(x - y)) > 1.0:
            return f"different {name} ({x[0]:g} vs {y[0]:g} mm)"
    if not np.allclose(a.pixel_spacing, b.pixel_spacing, rtol=1e-6):
        return f"different pixel spacing ({a.pixel_spacing} vs {b.pixel_spacing})"
    if a.intensity_relationship != b.intensity_relationship:
        return f"different PixelIntensityRelationship ({a.intensity_relationship} vs {b.intensity_relationship})"
    return ""


def order_pair(a: XARun, b: XARun) -> tuple[XARun, XARun, str]:
    """(fill, mask, reason): hints first, else the brighter run (higher mean log-intensity) is the mask."""
    ha, hb = _hint(a), _hint(b)
    if ha and hb and ha != hb:
        return (a, b, "series description / image type") if ha == "fill" else (b, a, "series description / image type")
    if ha == "mask" and not hb or hb == "fill" and not ha:
        return b, a, "series description / image type"
    if hb == "mask" and not ha or ha == "fill" and not hb:
        return a, b, "series description / image type"
    floor = intensity_floor(a, b)
    ma = float(np.mean(log_intensity(a, floor)[a.valid_mask]))
    mb = float(np.mean(log_intensity(b, floor)[b.valid_mask]))
    if ma == mb:
        raise BadInput(f"cannot tell the mask from the fill run: {a.label} and {b.label} have the same mean "
                       f"intensity; name them in SeriesDescription (MASK/FILL) or pass a subtracted run")
    return (b, a, "mean intensity (contrast-filled run is darker)") if ma > mb else \
        (a, b, "mean intensity (contrast-filled run is darker)")


def dsa_line_integrals(fill: XARun, mask: XARun) -> np.ndarray:
    """``log(mask) − log(fill)`` clipped at 0, zero outside either run's shutters, [N, H, W] float32."""
    problem = pair_mismatch(fill, mask, angle_tol_deg=np.inf)
    if problem:
        raise BadInput(f"fill run {fill.label} and mask run {mask.label} do not match: {problem}")
    floor = intensity_floor(fill, mask)
    out = log_intensity(mask, floor) - log_intensity(fill, floor)
    np.clip(out, 0, None, out=out)
    out[~(fill.valid_mask & mask.valid_mask)] = 0
    return out


def select_dsa(runs: Sequence[XARun], subtracted: bool | None = None, angle_tol_deg: float = 0.5) -> DSASignal:
    """The DSA signal of a study: one pre-subtracted run, or one fill/mask pair (module doc).

    ``subtracted=True`` treats the (single) run as already subtracted; ``False`` insists on a
    fill/mask pair; ``None`` decides from the files.
    """
    runs = list(runs)
    if not runs:
        raise BadInput("no XA run to reconstruct from")
    if subtracted is None:
        subs = [r for r in runs if r.subtracted]
        subtracted = bool(subs) and (len(subs) == 1 or len(subs) == len(runs))
        candidates = subs if subs else runs
    else:
        candidates = runs
    if subtracted:
        if len(candidates) != 1:
            raise BadInput(f"{len(candidates)} subtracted runs found ({_labels(candidates)}); "
                           f"pass the files of one run only")
        run = candidates[0]
        return DSASignal(subtracted_line_integrals(run), run.geometry, run.times_s, run.valid_mask.copy(),
                         subtracted_run=run, how=f"pre-subtracted run {run.label}")
    plain = [r for r in runs if not r.subtracted]
    if len(plain) < 2:
        which = plain[0].label if plain else _labels(runs)
        raise BadInput(f"only one unsubtracted run ({which}); give its mask run too, or pass --subtracted if "
                       f"it is already a subtraction (DSA) run")
    pairs = []
    reasons = []
    for i in range(len(plain)):
        for j in range(i + 1, len(plain)):
            why = pair_mismatch(plain[i], plain[j], angle_tol_deg)
            if why:
                reasons.append(f"{plain[i].label} / {plain[j].label}: {why}")
            else:
                pairs.append((plain[i], plain[j]))
    if not pairs and len(plain) == 2:
        hints = (_hint(plain[0]), _hint(plain[1]))
        fill, mask = plain if hints == ("fill", "mask") else (plain[::-1] if hints == ("mask", "fill") else plain)
        named = "fill run {} and mask run {}" if "fill" in hints or "mask" in hints else "runs {} and {}"
        raise BadInput(f"{named.format(fill.label, mask.label)} cannot be paired: "
                       f"{pair_mismatch(fill, mask, angle_tol_deg)}")
    if not pairs:
        raise BadInput("no fill/mask pair: " + "; ".join(reasons[:3]))
    if len(pairs) > 1:
        raise BadInput(f"{len(pairs)} possible fill/mask pairs among {_labels(plain)}; pass the files of one pair")
    fill, mask, reason = order_pair(*pairs[0])
    sig = dsa_line_integrals(fill, mask)
    return DSASignal(sig, fill.geometry, fill.times_s, fill.valid_mask & mask.valid_mask, fill=fill, mask=mask,
                     how=f"fill {fill.label} minus mask {mask.label} (mask chosen by {reason})")


def _labels(runs: Sequence[XARun]) -> str:
    return ", ".join(r.label for r in runs[:4]) + (f", … {len(runs) - 4} more" if len(runs) > 4 else "")


def stack_views(runs: Sequence[XARun]) -> tuple[np.ndarray, ConeBeamGeometry]:
    """All frames of ``runs`` as one multi-view problem: ([N, H, W] frames, geometry), in the given order.

    For two-view coronary input (two single-frame XA images, possibly from different series); the
    frames keep their real-world values, convert them with ``log_intensity`` as needed.
    """
    runs = list(runs)
    if not runs:
        raise BadInput("no XA image to stack")
    shapes = {r.frames.shape[1:] for r in runs}
    if len(shapes) != 1:
        raise BadInput(f"views have different frame sizes {sorted(shapes)}: {_labels(runs)}")
    gs = [r.geometry for r in runs]
    cat = {k: np.concatenate([getattr(g, k) for g in gs]) for k in ("source", "det_center", "det_u", "det_v")}
    times = np.concatenate([r.times_s for r in runs])
    meta = {"frame": "DICOM patient LPS, isocentre at origin",
            "primary_deg": np.concatenate([r.primary_deg for r in runs]).tolist(),
            "secondary_deg": np.concatenate([r.secondary_deg for r in runs]).tolist(),
            "source_files": [f for r in runs for f in r.source_files]}
    geom = ConeBeamGeometry(cat["source"], cat["det_center"], cat["det_u"], cat["det_v"], gs[0].det_shape, times, meta)
    return np.concatenate([r.frames for r in runs]), geom


def write_xa_study(folder: str | Path, geometry: ConeBeamGeometry, *, mask: np.ndarray | None = None,
                   fill: np.ndarray | None = None, line_integrals: np.ndarray | None = None,
                   description: str = "angiorecon", **kwargs) -> list[Path]:
    """Write a DSA acquisition as DICOM XA files in ``folder`` (one study, one series per run).

    Give ``mask`` and ``fill`` raw runs [N, H, W] (linear in intensity) → ``mask.dcm`` (series 1,
    "<description> MASK") and ``fill.dcm`` (series 2, "<description> FILL"); and/or
    ``line_integrals`` → ``dsa.dcm``, a pre-subtracted run (series 3). Frames are in ``geometry``'s
    pixel order; :func:`~angiorecon.formats.dicom_xa.write_xa_geometry` mirrors them when needed.
    Other keyword arguments go to :func:`~angiorecon.formats.dicom_xa.write_xa`.
    """
    from pydicom.uid import generate_uid

    from .dicom_xa import write_xa_geometry

    if (mask is None) != (fill is None):
        raise BadInput("write_xa_study needs both mask and fill runs, or neither")
    if mask is None and line_integrals is None:
        raise BadInput("write_xa_study needs mask and fill runs and/or line integrals")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = {"study_uid": kwargs.pop("study_uid", None) or generate_uid(),
              "frame_of_reference_uid": kwargs.pop("frame_of_reference_uid", None) or generate_uid(), **kwargs}
    written = []
    if mask is not None:
        written.append(write_xa_geometry(folder / "mask.dcm", mask, geometry, series_number=1,
                                         series_description=f"{description} MASK", **common))
        written.append(write_xa_geometry(folder / "fill.dcm", fill, geometry, series_number=2,
                                         series_description=f"{description} FILL", **common))
    if line_integrals is not None:
        written.append(write_xa_geometry(folder / "dsa.dcm", line_integrals, geometry, series_number=3,
                                         series_description=f"{description} DSA", subtracted=True, **common))
    return written
