"""DICOM X-ray angiography (XA / XRF, legacy and Enhanced) runs: reader and writer.

Reading gives an :class:`XARun`: the frames as float32 ``[frames, rows, cols]``, the per-frame
C-arm angles, distances, pixel spacing, times, a valid-pixel mask from the shutters/collimator, and
a :class:`~angiorecon.geometry.ConeBeamGeometry` built with
:meth:`ConeBeamGeometry.from_xa_angles` (DICOM patient frame LPS, isocentre at the origin,
``slicer_ecosystem.md`` §5, ``coronary_two_view.md`` §3).

Facts the reader relies on (PS3.3):

* Angles (C.8.7.5.1.2): Positioner Primary Angle (0018,1510) RAO− / LAO+, Secondary (0018,1511)
  CAU− / CRA+, both for the **first** frame. Increments (0018,1520/1521, C.8.7.5.1.3): one value =
  average change per frame → ``angle_k = base + k·inc``; NumberOfFrames values = offsets from the
  first frame → ``angle_k = base + inc[k]`` (this also covers "absolute angles in the increment
  vector with base 0"); any other number of values is refused.
* Distances: SID = Distance Source to Detector (0018,1110), SOD = Distance Source to Patient
  (0018,1111) (isocentre for C-arms); Enhanced XA: X-Ray Geometry Sequence > Distance Source to
  Isocenter (0018,9402) / Distance Source to Detector.
* Spacing: Imager Pixel Spacing (0018,1164) (row, column) at the detector; Pixel Spacing
  (0028,0030) is only a fallback (with a warning: it is often calibrated to the object plane).
* Time: Frame Time Vector (0018,1065, ms increments, first 0) or Frame Time (0018,1063, ms) as
  pointed to by Frame Increment Pointer (0028,0009); Enhanced XA: Frame Content Sequence >
  Frame Acquisition DateTime. Times are seconds from the first frame.
* Enhanced XA / XRF: every per-frame functional-group macro is looked up first in the frame's item
  of Per-frame Functional Groups Sequence, then in Shared Functional Groups Sequence.

Pixel values (:attr:`XARun.frames`) are "real-world" values: stored values mapped through the
first Real World Value Mapping item (slope/intercept) when present, else through Rescale
Slope/Intercept when present, else the stored values. What they mean is given by Pixel Intensity
Relationship (0028,1040) and its Sign (0028,1041); :func:`log_intensity` turns them into
``ln(intensity)`` (up to an additive constant) and :func:`subtracted_line_integrals` a
pre-subtracted run into line integrals:

* ``LIN``, sign +1: value ∝ intensity → ``ln(max(value, floor))``;
  sign −1: higher value = less intensity → ``ln(max(value_max − value, floor))`` with ``value_max``
  the real-world value of the largest storable pixel.
* ``LOG``: value ∝ ln(intensity) with unknown base/scale → ``sign · value`` (so DSA signals of LOG
  data are in the file's own units; our writer uses natural-log units).
* ``DISP``: a vendor display curve that cannot be inverted → treated as ``LIN`` with a warning.

Writing float frames: XA forbids Rescale Slope/Intercept in the stored image's meaning of
intensity, so :func:`write_xa` quantises floats to uint16 over their range and records the map
``value = slope · stored + intercept`` in Real World Value Mapping Sequence (0040,9096) (LUT Label
``ANGIORECON``, or ``LINE_INTEGRAL`` for pre-subtracted line integrals). Reading back gives the
floats to within half a quantisation step (range / 131070). Integer-valued frames (of any dtype,
e.g. simulated photon counts) that fit uint16 are stored exactly, without a mapping.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import AngioError, BadInput, OutOfMemory, check_memory
from ..geometry import ConeBeamGeometry

XA_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2.1": "Enhanced XRF Image Storage",
}
ENHANCED_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.12.1.1", "1.2.840.10008.5.1.4.1.1.12.2.1"}
XA_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.12.1"
XRF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.12.2"

#: LUT Label of the Real World Value Mapping item written for pre-subtracted line integrals.
LINE_INTEGRAL_LABEL = "LINE_INTEGRAL"
INTENSITY_LABEL = "ANGIORECON"

#: Which command-line flag replaces which missing tag.
OVERRIDE_FLAGS = {
    "DistanceSourceToDetector": "--sid",
    "DistanceSourceToPatient": "--sod",
    "DistanceSourceToIsocenter": "--sod",
    "ImagerPixelSpacing": "--pixel-spacing",
    "PositionerPrimaryAngle": "--primary",
    "PositionerSecondaryAngle": "--secondary",
    "PositionerPrimaryAngleIncrement": "--primary",
    "PositionerSecondaryAngleIncrement": "--secondary",
}


# ======================================================================================= data
@dataclass(frozen=True)
class XAOverrides:
    """User-supplied values that replace (or stand in for missing) geometry tags.

    ``primary_deg`` / ``secondary_deg``: one value replaces the base (first-frame) angle and the
    file's increments still apply; one value per frame gives absolute per-frame angles.
    ``pixel_spacing`` is (row, column) mm at the detector.
    """

    sid: float | None = None
    sod: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    primary_deg: tuple[float, ...] | None = None
    secondary_deg: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "XAOverrides":
        """From a job dictionary (keys ``sid``, ``sod``, ``pixel_spacing``, ``primary``, ``secondary``)."""
        d = d or {}

        def floats(key: str, n: int | None = None) -> tuple[float, ...] | None:
            v = d.get(key)
            if v is None:
                return None
            vals = [v] if isinstance(v, (int, float)) else list(v)
            try:
                out = tuple(float(x) for x in vals)
            except (TypeError, ValueError):
                raise BadInput(f"override {key} must be numbers, got {v!r}") from None
            if not out or not all(math.isfinite(x) for x in out) or (n is not None and len(out) != n):
                raise BadInput(f"override {key} must be {n or 'one or more'} finite numbers, got {v!r}")
            return out

        sid, sod, ps = floats("sid", 1), floats("sod", 1), floats("pixel_spacing")
        if ps is not None and len(ps) == 1:
            ps = (ps[0], ps[0])
        if ps is not None and (len(ps) != 2 or min(ps) <= 0):
            raise BadInput(f"override pixel_spacing must be one or two positive numbers (row, column mm), got {ps}")
        return cls(sid=None if sid is None else sid[0], sod=None if sod is None else sod[0],
                   pixel_spacing=None if ps is None else (ps[0], ps[1]),
                   primary_deg=floats("primary"), secondary_deg=floats("secondary"))


@dataclass(eq=False)
class XARun:
    """One XA/XRF image (an instance: a run or a single frame) with its geometry."""

    frames: np.ndarray                  #: [N, H, W] float32 real-world pixel values
    geometry: ConeBeamGeometry          #: DICOM LPS frame, isocentre at the origin
    times_s: np.ndarray                 #: (N,) seconds from the first frame
    primary_deg: np.ndarray             #: (N,) LAO + / RAO −
    secondary_deg: np.ndarray           #: (N,) CRA + / CAU −
    sid: np.ndarray                     #: (N,) source–detector distance, mm
    sod: np.ndarray                     #: (N,) source–isocentre distance, mm
    pixel_spacing: tuple[float, float]  #: (row, column) mm at the detector
    intensity_relationship: str         #: LIN, LOG or DISP
    intensity_sign: int                 #: +1: higher value = more intensity; −1: less
    valid_mask: np.ndarray              #: [N, H, W] bool, False outside shutters/collimator
    subtracted: bool                    #: the pixels are already a subtraction (DSA) image
    value_max: float                    #: real-world value of the largest storable pixel
    quantity: str = ""                  #: "line_integral" when the file says so (our writer)
    source_files: list[str] = field(default_factory=list)
    sop_class_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    instance_number: int | None = None
    series_description: str = ""
    image_type: tuple[str, ...] = ()
    enhanced: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def label(self) -> str:
        """Short human-readable name for messages."""
        name = Path(self.source_files[0]).name if self.source_files else self.sop_instance_uid
        desc = f" '{_clean(self.series_description, 40)}'" if self.series_description else ""
        return f"{name}{desc} ({self.n_frames} frames)"


# ======================================================================================= helpers
def _clean(text: Any, limit: int = 80) -> str:
    """Printable, one-line, bounded text of a file value or parser message (for error messages)."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return out if len(out) <= limit else out[:limit] + "…"


def _tag_text(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(keyword)
    return keyword if t is None else f"{keyword} ({t >> 16:04X},{t & 0xFFFF:04X})"


def _missing(where: str, keyword: str, what: str = "is missing") -> BadInput:
    flag = OVERRIDE_FLAGS.get(keyword)
    hint = f"; pass {flag} to supply it" if flag else ""
    return BadInput(f"{where}: {_tag_text(keyword)} {what}{hint}")


def _raw(ds: Any, keyword: str, where: str) -> Any:
    """Element value or None when absent/empty; decoding failures become BadInput naming the tag."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
    except AngioError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed elements
        raise BadInput(f"{where}: {_tag_text(keyword)} cannot be decoded ({type(exc).__name__}: {_clean(exc)})") from None
    if value is None:
        return None
    if isinstance(value, (str, bytes)) and len(value) == 0:
        return None
    if _is_multi(value) and len(value) == 0:
        return None
    return value


def _is_multi(value: Any) -> bool:
    from pydicom.multival import MultiValue

    return isinstance(value, (list, tuple, MultiValue))


def _floats(ds: Any, keyword: str, where: str) -> np.ndarray | None:
    """Numeric element as a 1-D float64 array (None if absent); refuses text, bytes and NaN/inf."""
    value = _raw(ds, keyword, where)
    if value is None:
        return None
    items = list(value) if _is_multi(value) else [value]
    out = []
    for v in items:
        if isinstance(v, (bytes, bytearray)) or v is None or isinstance(v, bool):
            raise BadInput(f"{where}: {_tag_text(keyword)} must hold numbers, got {_clean(value, 40)!r}")
        try:
            out.append(float(v))
        except (TypeError, ValueError, OverflowError):
            raise BadInput(f"{where}: {_tag_text(keyword)} must hold numbers, got {_clean(value, 40)!r}") from None
    arr = np.asarray(out, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise BadInput(f"{where}: {_tag_text(keyword)} holds NaN or infinite values")
    return arr


def _float1(ds: Any, keyword: str, where: str) -> float | None:
    arr = _floats(ds, keyword, where)
    if arr is None:
        return None
    if arr.size != 1:
        raise BadInput(f"{where}: {_tag_text(keyword)} must hold one value, got {arr.size}")
    return float(arr[0])


def _int1(ds: Any, keyword: str, where: str) -> int | None:
    v = _float1(ds, keyword, where)
    if v is None:
        return None
    if v != int(v):
        raise BadInput(f"{where}: {_tag_text(keyword)} must be an integer, got {v}")
    return int(v)


def _text(ds: Any, keyword: str, where: str) -> str:
    value = _raw(ds, keyword, where)
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1", "replace").strip()
    if _is_multi(value):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _texts(ds: Any, keyword: str, where: str) -> tuple[str, ...]:
    value = _raw(ds, keyword, where)
    if value is None:
        return ()
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("latin-1", "replace").split("\\")
    items = list(value) if _is_multi(value) else [value]
    return tuple(str(v).strip().upper() for v in items)


def _seq_item(ds: Any, keyword: str, where: str, index: int = 0) -> Any | None:
    """Item ``index`` of a sequence element (None when absent or too short)."""
    from pydicom.dataset import Dataset

    value = _raw(ds, keyword, where)
    if value is None:
        return None
    if not _is_multi(value) and not hasattr(value, "__getitem__"):
        raise BadInput(f"{where}: {_tag_text(keyword)} must be a sequence")
    try:
        item = value[index] if len(value) > index else None
    except Exception:  # noqa: BLE001 - a mutated VR can make the value a non-sequence
        raise BadInput(f"{where}: {_tag_text(keyword)} must be a sequence") from None
    if item is not None and not isinstance(item, Dataset):
        raise BadInput(f"{where}: {_tag_text(keyword)} must be a sequence of items")
    return item


def read_dicom_header(path: str | Path, *, stop_before_pixels: bool = False) -> Any:
    """``pydicom.dcmread`` with every parser failure turned into a one-line :class:`BadInput`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path} does not exist")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, expected a DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, defer_size="256 KB")
    except InvalidDicomError:
        raise BadInput(f"{path} is not a DICOM file (no 'DICM' preamble and no readable header)") from None
    except MemoryError:
        raise OutOfMemory(f"{path}: ran out of memory while reading the DICOM header") from None
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise many types in pydicom
        raise BadInput(f"{path} is corrupt or truncated ({type(exc).__name__}: {_clean(exc, 120)})") from None


def sop_class_and_modality(ds: Any, where: str) -> tuple[str, str]:
    sop = _text(ds, "SOPClassUID", where)
    if not sop:
        try:
            sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
        except Exception:  # noqa: BLE001 - broken file meta
            sop = ""
    return sop, _text(ds, "Modality", where)


def check_xa(ds: Any, where: str) -> str:
    """Return the SOP class UID, or raise BadInput when the object is not an XA/XRF image."""
    sop, modality = sop_class_and_modality(ds, where)
    if sop not in XA_SOP_CLASSES:
        try:
            from pydicom.uid import UID

            name = UID(sop).name if sop else "no SOP Class UID"
        except Exception:  # noqa: BLE001 - garbage UID text
            name = sop
        raise BadInput(f"{where} is not an X-ray angiography image: SOP class {_clean(sop, 64) or '?'} "
                       f"({_clean(name, 64)}), modality {_clean(modality, 16) or '?'}; expected XA/XRF "
                       f"(1.2.840.10008.5.1.4.1.1.12.x)")
    return sop


# ======================================================================================= reader
def read_xa(path: str | Path, overrides: XAOverrides | None = None) -> XARun:
    """Read one XA/XRF instance (legacy multi-frame or single-frame, or Enhanced XA/XRF).

    Raises :class:`BadInput` (naming the file and tag, and the override flag for missing geometry)
    or :class:`OutOfMemory` (estimated from Rows × Columns × NumberOfFrames before decoding).
    """
    path = Path(path)
    where = str(path)
    ov = overrides or XAOverrides()
    ds = read_dicom_header(path)
    sop = check_xa(ds, where)
    enhanced = sop in ENHANCED_SOP_CLASSES
    warn: list[str] = []

    n, rows, cols = _frame_layout(ds, where)
    if enhanced:
        prim, sec, sid, sod, spacing, times = _enhanced_geometry(ds, n, where, ov, warn)
    else:
        prim, sec, sid, sod, spacing, times = _legacy_geometry(ds, n, where, ov, warn)
    if np.any(sod <= 0) or np.any(sid <= sod):
        raise BadInput(f"{where}: need 0 < SOD < SID, got SOD={sod.min():g} mm, SID={sid.min():g} mm "
                       f"(DistanceSourceToPatient/DistanceSourceToDetector; override with --sod/--sid)")

    pir = _text(ds, "PixelIntensityRelationship", where).upper() or "LIN"
    if pir not in ("LIN", "LOG", "DISP"):
        warn.append(f"unknown PixelIntensityRelationship {_clean(pir, 20)!r}; treated as LIN")
        pir = "LIN"
    if pir == "DISP":
        warn.append("PixelIntensityRelationship is DISP (display curve); pixel values are treated as linear "
                    "in intensity, so line integrals are approximate")
    sign_v = _float1(ds, "PixelIntensityRelationshipSign", where)
    sign = -1 if sign_v is not None and sign_v < 0 else 1

    image_type = _texts(ds, "ImageType", where)
    viewing = _text(ds, "RecommendedViewingMode", where).upper()
    subtracted = viewing == "SUB" or any("SUBTRACT" in t for t in image_type)
    slope, intercept, label = _value_mapping(ds, where)

    frames, stored_max = _decode_pixels(ds, n, rows, cols, where)
    if slope != 1.0 or intercept != 0.0:
        frames *= np.float32(slope)
        frames += np.float32(intercept)
    if not np.all(np.isfinite(frames)):
        raise BadInput(f"{where}: pixel values contain NaN or infinite values")

    valid = _valid_mask(ds, n, rows, cols, where, enhanced, warn)
    meta = {"source_file": str(path), "series_uid": _text(ds, "SeriesInstanceUID", where),
            "sop_instance_uid": _text(ds, "SOPInstanceUID", where)}
    geom = ConeBeamGeometry.from_xa_angles(prim, sec, sid, sod, spacing, (rows, cols), times=times, meta=meta)
    inst = _float1(ds, "InstanceNumber", where)
    return XARun(
        frames=frames, geometry=geom, times_s=times, primary_deg=prim, secondary_deg=sec, sid=sid, sod=sod,
        pixel_spacing=spacing, intensity_relationship=pir, intensity_sign=sign, valid_mask=valid,
        subtracted=subtracted, value_max=float(stored_max * slope + intercept),
        quantity="line_integral" if label == LINE_INTEGRAL_LABEL else "",
        source_files=[str(path)], sop_class_uid=sop, study_uid=_text(ds, "StudyInstanceUID", where),
        series_uid=meta["series_uid"], sop_instance_uid=meta["sop_instance_uid"],
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID", where),
        instance_number=None if inst is None else int(inst),
        series_description=_text(ds, "SeriesDescription", where), image_type=image_type, enhanced=enhanced,
        warnings=warn)


def _frame_layout(ds: Any, where: str) -> tuple[int, int, int]:
    rows, cols = _int1(ds, "Rows", where), _int1(ds, "Columns", where)
    if rows is None or cols is None or rows < 1 or cols < 1:
        raise BadInput(f"{where}: Rows (0028,0010) and Columns (0028,0011) must be positive, got {rows} x {cols}")
    nf = _raw(ds, "NumberOfFrames", where)
    if nf is None:
        n = 1
    else:
        n = _int1(ds, "NumberOfFrames", where)
        if n is None or n < 1:
            raise BadInput(f"{where}: {_tag_text('NumberOfFrames')} must be a positive integer, got {_clean(nf, 40)!r}")
    spp = _int1(ds, "SamplesPerPixel", where) or 1
    photometric = _text(ds, "PhotometricInterpretation", where).upper() or "MONOCHROME2"
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInput(f"{where}: expected grey-scale pixels (SamplesPerPixel 1, MONOCHROME1/2), got "
                       f"{spp} samples, {_clean(photometric, 20)}")
    bits = _int1(ds, "BitsAllocated", where)
    if bits not in (8, 16, 32):
        raise BadInput(f"{where}: {_tag_text('BitsAllocated')} must be 8, 16 or 32, got {bits}")
    # Decoded storage + float32 copy + valid mask, estimated before touching the pixel data.
    check_memory(float(n) * rows * cols * (bits // 8 + 4 + 1), f"decoding {n} frames of {rows}x{cols} from {where}")
    return n, rows, cols


def _angles(ds: Any, n: int, where: str, base_kw: str, inc_kw: str, override: tuple[float, ...] | None,
            dynamic: bool) -> np.ndarray:
    flag = OVERRIDE_FLAGS[base_kw]
    if override is not None and len(override) == n and n > 1:
        return np.asarray(override, dtype=np.float64)
    if override is not None and len(override) != 1:
        raise BadInput(f"{where}: {flag} needs 1 value or one per frame ({n}), got {len(override)}")
    base = override[0] if override is not None else _float1(ds, base_kw, where)
    if base is None:
        raise _missing(where, base_kw)
    inc = _floats(ds, inc_kw, where)
    k = np.arange(n, dtype=np.float64)
    if inc is None:
        if dynamic and n > 1:
            raise BadInput(f"{where}: PositionerMotion is DYNAMIC but {_tag_text(inc_kw)} is missing; "
                           f"pass {flag} with one angle per frame")
        return np.full(n, base)
    if inc.size == 1:
        return base + k * inc[0]          # PS3.3 C.8.7.5.1.3: average change per frame
    if inc.size == n:
        return base + inc                 # offsets from the first frame (or absolute with base 0)
    raise BadInput(f"{where}: {_tag_text(inc_kw)} has {inc.size} values; PS3.3 C.8.7.5.1.3 allows 1 "
                   f"(average step per frame) or NumberOfFrames = {n} (offsets from the first frame)")


def _legacy_geometry(ds: Any, n: int, where: str, ov: XAOverrides, warn: list[str]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float], np.ndarray]:
    motion = _text(ds, "PositionerMotion", where).upper()
    # DYNAMIC needs an increment; when only one of the two is given, the other axis did not move.
    has_inc = [_raw(ds, kw, where) is not None
               for kw in ("PositionerPrimaryAngleIncrement", "PositionerSecondaryAngleIncrement")]
    has_inc += [o is not None and len(o) == n > 1 for o in (ov.primary_deg, ov.secondary_deg)]
    dynamic = motion == "DYNAMIC" and not any(has_inc)
    if motion == "DYNAMIC" and any(has_inc) and not all(has_inc[:2]):
        warn.append("PositionerMotion is DYNAMIC but only one angle increment is present; the other angle is "
                    "taken as constant")
    prim = _angles(ds, n, where, "PositionerPrimaryAngle", "PositionerPrimaryAngleIncrement", ov.primary_deg, dynamic)
    sec = _angles(ds, n, where, "PositionerSecondaryAngle", "PositionerSecondaryAngleIncrement",
                  ov.secondary_deg, dynamic)
    sid = ov.sid if ov.sid is not None else _float1(ds, "DistanceSourceToDetector", where)
    if sid is None:
        raise _missing(where, "DistanceSourceToDetector")
    sod = ov.sod if ov.sod is not None else _float1(ds, "DistanceSourceToPatient", where)
    if sod is None:
        raise _missing(where, "DistanceSourceToPatient")
    spacing = _spacing(ds, where, ov, warn)
    times = _times(ds, n, where, warn)
    for kw in ("DetectorPrimaryAngle", "DetectorSecondaryAngle"):
        tilt = _floats(ds, kw, where)
        if tilt is not None and np.any(tilt != 0):
            warn.append(f"{kw} (beam tilt relative to the detector normal) is non-zero and is not modelled")
    rotation = _floats(ds, "FieldOfViewRotation", where)
    if (rotation is not None and np.any(rotation % 360 != 0)) or _text(ds, "FieldOfViewHorizontalFlip", where).upper() == "YES":
        warn.append("FieldOfViewRotation/HorizontalFlip is set; legacy XA images are taken as heads-up as the "
                    "standard assumes, check the handedness of the result")
    return prim, sec, np.full(n, float(sid)), np.full(n, float(sod)), spacing, times


def _spacing(ds: Any, where: str, ov: XAOverrides, warn: list[str]) -> tuple[float, float]:
    if ov.pixel_spacing is not None:
        return (float(ov.pixel_spacing[0]), float(ov.pixel_spacing[1]))
    sp = _floats(ds, "ImagerPixelSpacing", where)
    if sp is None:
        sp = _floats(ds, "PixelSpacing", where)
        if sp is None:
            raise BadInput(f"{where}: {_tag_text('ImagerPixelSpacing')} (and PixelSpacing (0028,0030)) is missing; "
                           f"pass --pixel-spacing to supply it")
        warn.append("ImagerPixelSpacing is missing; using PixelSpacing, which may be calibrated to the object "
                    "plane rather than the detector")
    return _check_spacing(sp, where)


def _check_spacing(sp: np.ndarray, where: str) -> tuple[float, float]:
    if sp.size != 2 or np.any(sp <= 0):
        raise BadInput(f"{where}: {_tag_text('ImagerPixelSpacing')} must be two positive numbers "
                       f"(row, column mm), got {sp.tolist()}")
    return (float(sp[0]), float(sp[1]))


def _times(ds: Any, n: int, where: str, warn: list[str], fallback: np.ndarray | None = None) -> np.ndarray:
    """Seconds from the first frame, from Frame Time Vector / Frame Time / frame rate."""
    from pydicom.tag import Tag

    pointer = _raw(ds, "FrameIncrementPointer", where)
    pointers: set[int] = set()
    if pointer is not None:
        for p in (list(pointer) if _is_multi(pointer) else [pointer]):
            try:
                pointers.add(int(Tag(p)))
            except Exception:  # noqa: BLE001 - a garbage pointer only changes the preference order
                warn.append(f"ignored unreadable FrameIncrementPointer value {_clean(p, 20)!r}")
    ftv = _floats(ds, "FrameTimeVector", where)
    ft = _float1(ds, "FrameTime", where)
    use_vector = ftv is not None and (Tag("FrameTimeVector") in pointers or ft is None)
    if use_vector:
        if ftv.size != n:
            raise BadInput(f"{where}: {_tag_text('FrameTimeVector')} has {ftv.size} values for {n} frames")
        if np.any(ftv[1:] < 0):
            raise BadInput(f"{where}: {_tag_text('FrameTimeVector')} holds negative intervals")
        return np.concatenate([[0.0], np.cumsum(ftv[1:])]) / 1000.0
    if ft is not None:
        if ft <= 0 and n > 1:
            raise BadInput(f"{where}: {_tag_text('FrameTime')} must be positive, got {ft} ms")
        return np.arange(n, dtype=np.float64) * ft / 1000.0
    if n == 1:
        return np.zeros(1)
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        fps = _float1(ds, kw, where)
        if fps is not None and fps > 0:
            warn.append(f"no FrameTime; times taken from {kw} = {fps:g} frames/s")
            return np.arange(n, dtype=np.float64) / fps
    if fallback is not None:
        return fallback
    warn.append("no frame timing (FrameTime, FrameTimeVector or frame rate); times are frame indices")
    return np.arange(n, dtype=np.float64)


def _fg(ds: Any, per: Any | None, shared: Any | None, seq_kw: str, where: str) -> Any | None:
    """Functional-group macro item: the frame's own first, then the shared one."""
    for group in (per, shared):
        if group is not None:
            item = _seq_item(group, seq_kw, where)
            if item is not None:
                return item
    return None


def _enhanced_geometry(ds: Any, n: int, where: str, ov: XAOverrides, warn: list[str]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float], np.ndarray]:
    from pydicom.valuerep import DT

    shared = _seq_item(ds, "SharedFunctionalGroupsSequence", where)
    per_seq = _raw(ds, "PerFrameFunctionalGroupsSequence", where)
    if per_seq is not None:
        try:
            n_items = len(per_seq)
        except TypeError:
            raise BadInput(f"{where}: {_tag_text('PerFrameFunctionalGroupsSequence')} must be a sequence") from None
        if n_items != n:
            raise BadInput(f"{where}: PerFrameFunctionalGroupsSequence has {n_items} items for {n} frames")
    prim, sec, sid, sod = (np.empty(n) for _ in range(4))
    spacings: list[tuple[float, float]] = []
    stamps: list[float] = []
    for k in range(n):
        per = None if per_seq is None else _seq_item(ds, "PerFrameFunctionalGroupsSequence", where, k)
        fw = f"{where} frame {k + 1}"
        pos = _fg(ds, per, shared, "PositionerPositionSequence", fw)
        for arr, kw, o in ((prim, "PositionerPrimaryAngle", ov.primary_deg),
                           (sec, "PositionerSecondaryAngle", ov.secondary_deg)):
            if o is not None:
                if len(o) not in (1, n):
                    raise BadInput(f"{where}: {OVERRIDE_FLAGS[kw]} needs 1 value or one per frame ({n})")
                arr[k] = o[0] if len(o) == 1 else o[k]
                continue
            v = None if pos is None else _float1(pos, kw, fw)
            if v is None:
                raise _missing(fw, kw, "is missing (PositionerPositionSequence (0018,9405) per-frame or shared)")
            arr[k] = v
        geo = _fg(ds, per, shared, "XRayGeometrySequence", fw)
        for arr, kw, o in ((sid, "DistanceSourceToDetector", ov.sid), (sod, "DistanceSourceToIsocenter", ov.sod)):
            v = o if o is not None else (None if geo is None else _float1(geo, kw, fw))
            if v is None:
                raise _missing(fw, kw, "is missing (XRayGeometrySequence (0018,9476) per-frame or shared)")
            arr[k] = v
        if ov.pixel_spacing is not None:
            spacings.append((float(ov.pixel_spacing[0]), float(ov.pixel_spacing[1])))
        else:
            props = _fg(ds, per, shared, "FramePixelDataPropertiesSequence", fw)
            sp = None if props is None else _floats(props, "ImagerPixelSpacing", fw)
            if sp is None:
                sp = _floats(ds, "ImagerPixelSpacing", fw)
            if sp is None:
                raise _missing(fw, "ImagerPixelSpacing", "is missing (FramePixelDataPropertiesSequence (0028,9443))")
            spacings.append(_check_spacing(sp, fw))
        content = _fg(ds, per, shared, "FrameContentSequence", fw)
        text = "" if content is None else (_text(content, "FrameAcquisitionDateTime", fw)
                                           or _text(content, "FrameReferenceDateTime", fw))
        if text:
            try:
                stamps.append(DT(text).timestamp())
            except Exception:  # noqa: BLE001 - DT raises ValueError/TypeError/OverflowError on garbage
                raise BadInput(f"{fw}: FrameAcquisitionDateTime {_clean(text, 30)!r} is not a DICOM date-time") from None
    if len(set(spacings)) != 1:
        raise BadInput(f"{where}: ImagerPixelSpacing changes between frames ({sorted(set(spacings))[:3]}); "
                       f"not supported")
    fallback = None
    if len(stamps) == n:
        fallback = np.asarray(stamps) - stamps[0]
    times = _times(ds, n, where, warn, fallback)
    return prim, sec, sid, sod, spacings[0], times


def _value_mapping(ds: Any, where: str) -> tuple[float, float, str]:
    """(slope, intercept, LUT label) from Real World Value Mapping, else Rescale Slope/Intercept."""
    item = _seq_item(ds, "RealWorldValueMappingSequence", where)
    if item is not None:
        slope = _float1(item, "RealWorldValueSlope", where)
        intercept = _float1(item, "RealWorldValueIntercept", where)
        if slope is not None:
            if slope == 0:
                raise BadInput(f"{where}: {_tag_text('RealWorldValueSlope')} is zero")
            return slope, intercept or 0.0, _text(item, "LUTLabel", where).upper()
    slope = _float1(ds, "RescaleSlope", where)
    intercept = _float1(ds, "RescaleIntercept", where)
    if slope == 0:
        raise BadInput(f"{where}: {_tag_text('RescaleSlope')} is zero")
    return (1.0 if slope is None else slope), (intercept or 0.0), ""


def _decode_pixels(ds: Any, n: int, rows: int, cols: int, where: str) -> tuple[np.ndarray, float]:
    """Decoded frames [N, H, W] float32 and the largest storable value."""
    tsyntax = ""
    try:
        tsyntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    except Exception:  # noqa: BLE001 - broken file meta; pydicom decides below
        pass
    if "PixelData" not in ds:
        raise BadInput(f"{where} has no pixel data (7FE0,0010)")
    bits = _int1(ds, "BitsAllocated", where) or 16
    bits_stored = _int1(ds, "BitsStored", where) or bits
    if not 1 <= bits_stored <= bits:
        raise BadInput(f"{where}: {_tag_text('BitsStored')} must be in 1..{bits}, got {bits_stored}")
    signed = (_int1(ds, "PixelRepresentation", where) or 0) == 1
    uncompressed = tsyntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "")
    if uncompressed:
        data = _raw(ds, "PixelData", where)
        if not isinstance(data, (bytes, bytearray)):
            raise BadInput(f"{where}: pixel data (7FE0,0010) is not a byte string")
        need = n * rows * cols * bits // 8
        if len(data) < need:
            raise BadInput(f"{where}: pixel data is truncated: {len(data)} bytes for {n} frames of "
                           f"{rows}x{cols} x {bits} bits (need {need})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except MemoryError:
        raise OutOfMemory(f"{where}: ran out of memory decoding the pixel data") from None
    except Exception as exc:  # noqa: BLE001 - decoders (pylibjpeg, numpy) raise many types on corrupt data
        raise BadInput(f"{where}: pixel data cannot be decoded ({type(exc).__name__}: {_clean(exc, 120)})") from None
    arr = np.asarray(arr)
    if arr.size != n * rows * cols:
        raise BadInput(f"{where}: decoded pixel data has {arr.size} values, expected {n}x{rows}x{cols}")
    frames = arr.reshape(n, rows, cols).astype(np.float32)
    stored_max = float(2 ** (bits_stored - 1) - 1 if signed else 2 ** bits_stored - 1)
    return frames, stored_max


# --------------------------------------------------------------------------------- shutters
def _valid_mask(ds: Any, n: int, rows: int, cols: int, where: str, enhanced: bool, warn: list[str]) -> np.ndarray:
    """[N, H, W] bool: True inside every display shutter and collimator shape."""
    masks = []
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence", where) if enhanced else None
    per_seq = _raw(ds, "PerFrameFunctionalGroupsSequence", where) if enhanced else None
    base = _shape_mask(ds, rows, cols, where, "Shutter", warn) & _shape_mask(ds, rows, cols, where, "Collimator", warn)
    if enhanced and (per_seq is not None or shared is not None):
        for k in range(n):
            per = None if per_seq is None else _seq_item(ds, "PerFrameFunctionalGroupsSequence", where, k)
            item = _fg(ds, per, shared, "FrameDisplayShutterSequence", f"{where} frame {k + 1}")
            masks.append(base if item is None else base & _shape_mask(item, rows, cols, where, "Shutter", warn))
        if any(m is not base for m in masks):
            return np.stack(masks)
    return np.broadcast_to(base, (n, rows, cols))


def _shape_mask(ds: Any, rows: int, cols: int, where: str, kind: str, warn: list[str]) -> np.ndarray:
    """Mask of one Display Shutter (kind "Shutter") or X-Ray Collimator (kind "Collimator") module."""
    mask = np.ones((rows, cols), dtype=bool)
    shapes = set(_texts(ds, f"{kind}Shape", where))
    if not shapes:
        return mask
    r = np.arange(1, rows + 1)[:, None]     # DICOM shutter coordinates are 1-based
    c = np.arange(1, cols + 1)[None, :]
    if "RECTANGULAR" in shapes:
        edges = [_float1(ds, f"{kind}{e}", where) for e in
                 ("LeftVerticalEdge", "RightVerticalEdge", "UpperHorizontalEdge", "LowerHorizontalEdge")]
        if any(e is None for e in edges):
            raise BadInput(f"{where}: {kind}Shape RECTANGULAR without all four {kind} edges")
        left, right, upper, lower = edges
        mask &= (c >= left) & (c <= right) & (r >= upper) & (r <= lower)
    if "CIRCULAR" in shapes:
        centre = _floats(ds, f"CenterOfCircular{kind}", where)
        radius = _float1(ds, f"RadiusOfCircular{kind}", where)
        if centre is None or centre.size != 2 or radius is None:
            raise BadInput(f"{where}: {kind}Shape CIRCULAR needs CenterOfCircular{kind} (row, column) and "
                           f"RadiusOfCircular{kind}")
        mask &= (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius ** 2
    if "POLYGONAL" in shapes:
        from skimage.draw import polygon2mask

        verts = _floats(ds, f"VerticesOfThePolygonal{kind}", where)
        if verts is None or verts.size < 6 or verts.size % 2:
            raise BadInput(f"{where}: {kind}Shape POLYGONAL needs at least 3 (row, column) vertices")
        mask &= polygon2mask((rows, cols), verts.reshape(-1, 2) - 1.0)
    if "BITMAP" in shapes:
        warn.append(f"{kind}Shape BITMAP (overlay-defined) is not applied to the valid-pixel mask")
    if not mask.any():
        raise BadInput(f"{where}: the {kind.lower()} leaves no visible pixel")
    return mask


# ======================================================================================= intensity
def log_intensity(run: XARun, floor: float | None = None) -> np.ndarray:
    """``ln(intensity)`` per pixel (up to an additive constant), [N, H, W] float32 (see module doc).

    ``floor`` is the smallest intensity taken for LIN/DISP data (zeros outside the collimator);
    pass the same floor for a fill run and its mask so their difference is 0 where both are dark.
    """
    v = run.frames
    if run.intensity_relationship == "LOG":
        return (v if run.intensity_sign > 0 else -v).astype(np.float32)
    intensity = v if run.intensity_sign > 0 else run.value_max - v
    if floor is None:
        floor = intensity_floor(run)
    return np.log(np.maximum(intensity, np.float32(floor))).astype(np.float32)


def intensity_floor(*runs: XARun) -> float:
    """Common LIN floor for ``log_intensity``: 1e-6 of the largest intensity (or 1 count)."""
    peak = max(float(np.max(r.frames if r.intensity_sign > 0 else r.value_max - r.frames)) for r in runs)
    return max(peak * 1e-6, 1e-30) if peak > 0 else 1.0


def subtracted_line_integrals(run: XARun) -> np.ndarray:
    """Line integrals (≥ 0) of a pre-subtracted run, [N, H, W] float32.

    ``L = −sign · value`` in the LOG/LIN domain (more attenuation = less intensity); for files that
    do not declare line integrals (our writer's LUT Label ``LINE_INTEGRAL``) the per-frame median is
    taken as the zero level, since vendors offset subtracted images to a mid-grey background and
    vessels cover a small fraction of a frame. Pixels outside the shutters are set to 0.
    """
    if run.quantity == "line_integral":
        out = run.frames.copy()
    else:
        out = -run.intensity_sign * run.frames
        out -= np.median(out.reshape(out.shape[0], -1), axis=1)[:, None, None]
    out = np.clip(out, 0, None)
    out[~run.valid_mask] = 0
    return out.astype(np.float32)


# ======================================================================================= writer
def _ds(x: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(x))


def _per_frame(values: float | Sequence[float] | np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.full(n, arr[0])
    if arr.size != n:
        raise BadInput(f"{name} needs 1 value or one per frame ({n}), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise BadInput(f"{name} contains NaN or infinite values")
    return arr


def _quantise(frames: np.ndarray) -> tuple[np.ndarray, float, float] | tuple[np.ndarray, None, None]:
    """uint16 stored values and (slope, intercept), or no mapping for integer-valued data that fits."""
    if frames.min() >= 0 and frames.max() <= 65535 and (
            np.issubdtype(frames.dtype, np.integer) or all(np.array_equal(f, np.rint(f)) for f in frames)):
        return frames.astype(np.uint16), None, None       # e.g. photon counts: stored exactly
    lo, hi = float(frames.min()), float(frames.max())
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.empty(frames.shape, np.uint16)
    for k in range(frames.shape[0]):          # frame by frame: no float64 copy of a whole run
        stored[k] = np.clip(np.rint((frames[k].astype(np.float64) - lo) / slope), 0, 65535)
    return stored, slope, lo


def write_xa(path: str | Path, frames: np.ndarray, *, primary_deg: float | Sequence[float],
             secondary_deg: float | Sequence[float], sid: float, sod: float,
             pixel_spacing: tuple[float, float], times_s: Sequence[float] | None = None,
             frame_time_ms: float | None = None, subtracted: bool = False,
             intensity_relationship: str | None = None, intensity_sign: int | None = None,
             increment_form: str = "vector", xrf: bool = False,
             shutter_rect: tuple[int, int, int, int] | None = None,
             shutter_circle: tuple[float, float, float] | None = None,
             study_uid: str | None = None, series_uid: str | None = None,
             frame_of_reference_uid: str | None = None, series_number: int = 1, instance_number: int = 1,
             series_description: str = "", patient_name: str = "Anonymous^Phantom",
             patient_id: str = "ANGIORECON", study_description: str = "angiorecon synthetic study",
             image_type: Sequence[str] | None = None) -> Path:
    """Write a legacy XA (or XRF) image: multi-frame for ``frames`` [N, H, W], single-frame for [H, W].

    Angles are per frame (or one value for a static run): the first goes into Positioner
    Primary/Secondary Angle and, when they change, the rest into the increment tags as offsets from
    the first frame (``increment_form="vector"``, PS3.3 C.8.7.5.1.3) or as one average step
    (``"average"``, only for evenly spaced angles). ``times_s`` (seconds) become Frame Time when
    evenly spaced, else Frame Time Vector; or give ``frame_time_ms``. ``pixel_spacing`` is Imager
    Pixel Spacing (row, column) mm. ``subtracted=True`` marks frames as line integrals (LOG, sign −1,
    Recommended Viewing Mode SUB, Image Type SUBTRACTION); otherwise frames are raw intensities
    (LIN, sign +1) unless ``intensity_relationship``/``intensity_sign`` say otherwise. Float frames
    are stored as uint16 with a Real World Value Mapping (module doc). Shutters are 1-based DICOM
    pixel coordinates: rectangle (left, right, upper, lower), circle (centre row, centre column,
    radius). The file is written to a temporary name and renamed, so no partial file is left.
    """
    import os

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.tag import Tag
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    arr = np.asarray(frames)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise BadInput(f"frames must be [frames, rows, cols] or [rows, cols], got shape {np.shape(frames)}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BadInput(f"frames must be numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise BadInput("frames contain NaN or infinite values; refusing to write them to DICOM")
    n, rows, cols = arr.shape
    if rows > 65535 or cols > 65535:
        raise BadInput(f"frame size {rows}x{cols} exceeds the DICOM limit of 65535")
    prim = _per_frame(primary_deg, n, "primary_deg")
    sec = _per_frame(secondary_deg, n, "secondary_deg")
    if not (0 < sod < sid):
        raise BadInput(f"need 0 < SOD < SID, got SOD={sod}, SID={sid}")
    sr, sc = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    if sr <= 0 or sc <= 0:
        raise BadInput(f"pixel_spacing must be positive, got {pixel_spacing}")
    if increment_form not in ("vector", "average"):
        raise BadInput(f"increment_form must be 'vector' or 'average', got {increment_form!r}")
    pir = (intensity_relationship or ("LOG" if subtracted else "LIN")).upper()
    if pir not in ("LIN", "LOG", "DISP"):
        raise BadInput(f"intensity_relationship must be LIN, LOG or DISP, got {pir!r}")
    sign = intensity_sign if intensity_sign is not None else (-1 if subtracted else 1)

    stored, slope, intercept = _quantise(arr)
    sop_class = XRF_SOP_CLASS if xrf else XA_SOP_CLASS
    sop_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    # SOP Common, Patient, General Study, General Series, Frame of Reference, General Equipment
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", ""
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20000101", "120000", ""
    ds.StudyID, ds.AccessionNumber, ds.StudyDescription = "1", "", study_description
    ds.Modality = "RF" if xrf else "XA"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber, ds.SeriesDescription = int(series_number), series_description
    ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "angiorecon"
    # General Image, Image Pixel, X-Ray Image
    ds.InstanceNumber = int(instance_number)
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = "20000101", "120000"
    kind = list(image_type) if image_type else ["DERIVED" if subtracted else "ORIGINAL", "PRIMARY", "SINGLE A"]
    if subtracted and not any("SUBTRACT" in t.upper() for t in kind):
        kind.append("SUBTRACTION")
    ds.ImageType = kind
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelIntensityRelationship = pir
    ds.PixelIntensityRelationshipSign = int(sign)
    if subtracted:
        ds.RecommendedViewingMode = "SUB"
    ds.LossyImageCompression = "00"
    if slope is not None:
        item = Dataset()
        item.LUTExplanation = "stored pixel value to " + ("line integral" if subtracted else "real-world pixel value")
        item.LUTLabel = LINE_INTEGRAL_LABEL if subtracted else INTENSITY_LABEL
        item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 65535
        item.RealWorldValueSlope, item.RealWorldValueIntercept = float(slope), float(intercept)
        unit = Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "1", "UCUM", "no units"
        item.MeasurementUnitsCodeSequence = DicomSequence([unit])
        ds.RealWorldValueMappingSequence = DicomSequence([item])
    # X-Ray Acquisition, XA Positioner, detector
    ds.KVP, ds.RadiationSetting = "", "GR"
    ds.DistanceSourceToDetector = _ds(sid)
    ds.DistanceSourceToPatient = _ds(sod)
    ds.EstimatedRadiographicMagnificationFactor = _ds(sid / sod)
    ds.ImagerPixelSpacing = [_ds(sr), _ds(sc)]
    ds.PositionerPrimaryAngle = _ds(prim[0])
    ds.PositionerSecondaryAngle = _ds(sec[0])
    moving = bool(np.any(prim != prim[0]) or np.any(sec != sec[0]))
    increments: list[Any] = []
    if not single:
        ds.PositionerMotion = "DYNAMIC" if moving else "STATIC"
        if moving:
            for kw, ang in (("PositionerPrimaryAngleIncrement", prim), ("PositionerSecondaryAngleIncrement", sec)):
                steps = np.diff(ang)
                if increment_form == "average":
                    if not np.allclose(steps, steps[0], rtol=0, atol=1e-9):
                        raise BadInput(f"increment_form='average' needs evenly spaced angles ({kw})")
                    setattr(ds, kw, [_ds(steps[0])])
                else:
                    setattr(ds, kw, [_ds(a - ang[0]) for a in ang])
                increments.append(Tag(kw))
    # Shutters (Display Shutter module)
    shapes = []
    if shutter_rect is not None:
        left, right, upper, lower = (int(x) for x in shutter_rect)
        shapes.append("RECTANGULAR")
        ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge = left, right
        ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge = upper, lower
    if shutter_circle is not None:
        shapes.append("CIRCULAR")
        ds.CenterOfCircularShutter = [int(round(shutter_circle[0])), int(round(shutter_circle[1]))]
        ds.RadiusOfCircularShutter = int(round(shutter_circle[2]))
    if shapes:
        ds.ShutterShape = shapes
    # Cine + Multi-frame
    if not single:
        ds.NumberOfFrames = n
        if times_s is not None:
            t = _per_frame(times_s, n, "times_s")
            steps_ms = np.diff(t) * 1000.0
            if np.any(steps_ms <= 0):
                raise BadInput("times_s must increase strictly")
            if n > 1 and np.allclose(steps_ms, steps_ms[0], rtol=0, atol=1e-9):
                frame_time_ms = float(steps_ms[0])
            else:
                ds.FrameTimeVector = [_ds(0.0)] + [_ds(x) for x in steps_ms]
        if "FrameTimeVector" not in ds:
            ft = 1000.0 / 7.5 if frame_time_ms is None else float(frame_time_ms)
            if not (ft > 0 and math.isfinite(ft)):
                raise BadInput(f"frame_time_ms must be positive, got {frame_time_ms}")
            ds.FrameTime = _ds(ft)
            ds.CineRate = max(1, int(round(1000.0 / ft)))
            pointer = Tag("FrameTime")
        else:
            pointer = Tag("FrameTimeVector")
        # The time pointer goes first: GDCM (Slicer) reads the first pointer for the z spacing.
        ds.FrameIncrementPointer = [pointer, *increments] if increments else pointer
        ds.StartTrim, ds.StopTrim = 1, n
    ds.PixelData = stored.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    try:
        ds.save_as(str(tmp), enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ======================================================================================= geometry → XA
@dataclass(frozen=True)
class XAParams:
    """C-arm parameters that reproduce a geometry in legacy XA (see :func:`xa_params_from_geometry`)."""

    primary_deg: np.ndarray
    secondary_deg: np.ndarray
    sid: float
    sod: float
    pixel_spacing: tuple[float, float]
    flip_columns: bool   #: the geometry's columns run opposite to DICOM's (e.g. VPAL/4DRGS convention)
    flip_rows: bool


def xa_params_from_geometry(geometry: ConeBeamGeometry, atol_mm: float = 1e-6) -> XAParams:
    """Invert :meth:`ConeBeamGeometry.from_xa_angles` (up to a column/row mirror of the image).

    The geometry must be expressed in the DICOM patient frame (LPS) with the isocentre at the origin,
    a centred detector perpendicular to the central ray, the heads-up image orientation, one SID,
    one SOD and one pixel spacing for all views — what legacy XA can encode; else :class:`BadInput`.
    """
    g = geometry
    sod_v = np.linalg.norm(g.source, axis=1)
    axis = g.det_center - g.source
    sid_v = np.linalg.norm(axis, axis=1)
    d = -g.source / sod_v[:, None]
    if np.any(np.linalg.norm(np.cross(axis / sid_v[:, None], d), axis=1) * sid_v > atol_mm):
        raise BadInput("geometry not representable in DICOM XA: detector centre is off the ray through the isocentre")
    if np.ptp(sod_v) > atol_mm or np.ptp(sid_v) > atol_mm:
        raise BadInput("geometry not representable in legacy DICOM XA: SID/SOD change between views")
    sp = g.pixel_spacing
    if np.ptp(sp[:, 0]) > 1e-9 or np.ptp(sp[:, 1]) > 1e-9:
        raise BadInput("geometry not representable in DICOM XA: pixel spacing changes between views")
    b = np.arcsin(np.clip(d[:, 2], -1, 1))
    a = np.arctan2(d[:, 0], -d[:, 1])
    ref = ConeBeamGeometry.from_xa_angles(np.rad2deg(a), np.rad2deg(b), sid_v[0], sod_v[0],
                                          (sp[0, 0], sp[0, 1]), g.det_shape)
    su = np.einsum("ij,ij->i", g.det_u, ref.det_u) / (sp[:, 1] ** 2)
    sv = np.einsum("ij,ij->i", g.det_v, ref.det_v) / (sp[:, 0] ** 2)
    flips = []
    for s, name in ((su, "columns"), (sv, "rows")):
        if not (np.allclose(s, 1, atol=1e-6) or np.allclose(s, -1, atol=1e-6)):
            raise BadInput(f"geometry not representable in DICOM XA: detector {name} are rotated away from the "
                           f"heads-up orientation")
        flips.append(bool(s[0] < 0))
    return XAParams(np.rad2deg(a), np.rad2deg(b), float(sid_v[0]), float(sod_v[0]),
                    (float(sp[0, 0]), float(sp[0, 1])), flips[0], flips[1])


def write_xa_geometry(path: str | Path, frames: np.ndarray, geometry: ConeBeamGeometry, **kwargs: Any) -> Path:
    """Write ``frames`` [N, H, W] acquired with ``geometry`` as legacy XA (see :func:`write_xa`).

    The angles/distances come from :func:`xa_params_from_geometry`; frames are mirrored when the
    geometry's detector axes run opposite to DICOM's, so the written file describes the same rays.
    Times default to ``geometry.times`` (seconds). Other keyword arguments go to :func:`write_xa`.
    """
    p = xa_params_from_geometry(geometry)
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (geometry.n_views, *geometry.det_shape):
        raise BadInput(f"frames shape {np.shape(frames)} does not match the geometry "
                       f"({geometry.n_views}, {geometry.det_shape[0]}, {geometry.det_shape[1]})")
    if p.flip_columns:
        arr = arr[:, :, ::-1]
    if p.flip_rows:
        arr = arr[:, ::-1, :]
    if np.ndim(frames) == 2:
        arr = arr[0]
    if geometry.times is not None and "times_s" not in kwargs and "frame_time_ms" not in kwargs \
            and geometry.n_views > 1:
        kwargs["times_s"] = geometry.times
    return write_xa(path, arr, primary_deg=p.primary_deg, secondary_deg=p.secondary_deg, sid=p.sid, sod=p.sod,
                    pixel_spacing=p.pixel_spacing, **kwargs)
