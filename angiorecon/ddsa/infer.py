"""Deep-DSA inference: load a model, map any input into its domain, tiled batched prediction, file I/O.

Inputs: PNG/JPEG/TIFF frames (display intensities, or float TIFF line integrals), DICOM XA/RF (single or
multi-frame, via pydicom), NIfTI/NRRD/MHA stacks ``[frames, rows, cols]``. Every frame is mapped to line
integrals (:mod:`~angiorecon.ddsa.domain`), normalised with its **own whole-frame** statistics, cut into
overlapping tiles when larger than ``tile`` (blended with a linear ramp so seams vanish), run in batches
on CPU or CUDA, and the DSA is returned in line-integral units (≥ 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import BadInput
from ..models.unet import UNet, build_unet
from .domain import TARGET_GAIN, frame_stats, intensity_to_line_integral
from .train import load_checkpoint

DEFAULT_WEIGHTS = "ddsa_light.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
STACK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", "")


def shipped_model_path() -> Path:
    """Path of the model shipped inside the package (``angiorecon/weights/ddsa_light.pt``)."""
    return Path(str(resources.files("angiorecon").joinpath("weights", DEFAULT_WEIGHTS)))


@dataclass
class DeepDSA:
    """A loaded network plus the domain it expects; :meth:`predict` maps line integrals → DSA."""

    model: UNet
    domain: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    tile: int = 512
    overlap: int = 32
    batch: int = 8

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu", **kw: Any) -> "DeepDSA":
        """Load ``path`` (a training checkpoint or exported weights) or the shipped model."""
        if path is None:
            path = shipped_model_path()
            if not path.is_file():
                raise BadInput("no deep-DSA model is shipped in this installation; pass --model PATH "
                               "(train one with `angiorecon ddsa-train`)")
        state = load_checkpoint(path)
        try:
            model = build_unet(dict(state["arch"]))
            model.load_state_dict(state["model"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise BadInput(f"model file {path} does not match the deep-DSA network: {str(exc).splitlines()[0]}") from None
        model.to(device).eval()
        meta = {"path": str(path), "step": state.get("step"), "config": state.get("config"),
                **(state.get("meta") or {})}
        return cls(model, dict(state["domain"]), meta, device, **kw)

    @torch.no_grad()
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Network on normalised tiles ``[n, h, w]`` in batches."""
        out = np.empty_like(x)
        for i in range(0, len(x), self.batch):
            t = torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch]))[:, None].to(self.device)
            out[i:i + self.batch] = self.model(t).float().cpu().numpy()[:, 0]
        return out

    def predict_normalised(self, x: np.ndarray) -> np.ndarray:
        """Network output for normalised frames ``[n, H, W]``; frames larger than ``tile`` are tiled."""
        x = np.asarray(x, np.float32)
        n, h, w = x.shape
        if h <= self.tile and w <= self.tile:
            return self._run(x)
        ty, tx = min(self.tile, h), min(self.tile, w)
        ys, xs = _starts(h, ty, self.overlap), _starts(w, tx, self.overlap)
        weight = np.outer(_ramp(ty, self.overlap), _ramp(tx, self.overlap)).astype(np.float32)
        acc = np.zeros_like(x)
        norm = np.zeros((h, w), np.float32)
        coords = [(y0, x0) for y0 in ys for x0 in xs]
        tiles = np.stack([x[:, y0:y0 + ty, x0:x0 + tx] for y0, x0 in coords], axis=1).reshape(-1, ty, tx)
        pred = self._run(tiles).reshape(n, len(coords), ty, tx)
        for k, (y0, x0) in enumerate(coords):
            acc[:, y0:y0 + ty, x0:x0 + tx] += weight * pred[:, k]
            norm[y0:y0 + ty, x0:x0 + tx] += weight
        return acc / norm

    def predict(self, p: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """DSA (line integrals, ≥ 0) of fill frames ``p`` ``[n, H, W]`` or ``[H, W]`` given as line integrals."""
        p = np.asarray(p, np.float32)
        single = p.ndim == 2
        frames = p[None] if single else p
        out = np.empty_like(frames)
        for i, frame in enumerate(frames):
            centre, scale = frame_stats(frame)
            out[i] = np.maximum(self.predict_normalised(((frame - centre) / scale)[None])[0] * (scale / TARGET_GAIN), 0.0)
            if progress:
                progress((i + 1) / len(frames))
        return out[0] if single else out


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def _ramp(n: int, overlap: int) -> np.ndarray:
    r = np.ones(n, np.float32)
    k = min(overlap, n // 2)
    if k > 0:
        edge = (np.arange(k, dtype=np.float32) + 1) / (k + 1)
        r[:k], r[n - k:] = edge, edge[::-1]
    return r


# ----------------------------------------------------------------------------- readers
@dataclass
class Frames:
    """Frames of one input file mapped to line integrals, and what is needed to write results back."""

    path: Path
    kind: str                       #: image | tiff-float | dicom | stack
    p: np.ndarray                   #: [n, H, W] line integrals
    spacing: tuple[float, float] = (1.0, 1.0)
    frame_spacing: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_frames(path: str | Path) -> Frames:
    """Read one input file and map it to line integrals (see :data:`~angiorecon.ddsa.domain.DOMAIN`)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"input {path} does not exist")
    suf = _suffix(path)
    if suf in STACK_SUFFIXES:
        return _read_stack(path)
    if suf in IMAGE_SUFFIXES:
        return _read_image(path)
    if suf in DICOM_SUFFIXES or _is_dicom(path):
        return _read_dicom(path)
    raise BadInput(f"input {path.name}: unsupported format {suf!r}; expected PNG/TIFF/JPEG, DICOM or "
                   f"{'/'.join(STACK_SUFFIXES)}")


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _display_to_p(arr: np.ndarray, vmax: float | None = None, invert: bool = False) -> np.ndarray:
    if vmax is None:
        vmax = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else float(arr.max())
    return intensity_to_line_integral(arr, vmax, invert)


def _read_image(path: Path) -> Frames:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            pages = [np.asarray(page.convert("L") if page.mode in ("RGB", "RGBA", "P", "LA") else page)
                     for page in ImageSequence.Iterator(im)]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"cannot read image {path}: {exc}") from None
    arr = np.stack(pages)
    if arr.ndim != 3 or min(arr.shape[1:]) < 8:
        raise BadInput(f"image {path} must be a 2D grey frame (or pages of frames) of at least 8×8, got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        return Frames(path, "tiff-float", arr.astype(np.float32), info={"domain": "line integral (float image)"})
    return Frames(path, "image", _display_to_p(arr), info={"domain": "display intensity", "dtype": str(arr.dtype)})


def _read_dicom(path: Path) -> Frames:
    """XA/XRF through :mod:`angiorecon.formats.dicom_xa` (intensity relationship honoured); other grey
    DICOM images, or XA without the geometry tags DDSA does not need, through pydicom directly."""
    from ..formats.dicom_xa import log_intensity, read_xa

    try:
        run = read_xa(path)
    except BadInput as exc:
        return _read_dicom_plain(path, reason=str(exc))
    if run.quantity == "line_integral":
        p = run.frames.astype(np.float32)
    else:
        p = -log_intensity(run)
    info = {"domain": f"XA {run.intensity_relationship} sign {run.intensity_sign:+d} → -ln(intensity)",
            "subtracted": bool(run.subtracted), "warnings": list(run.warnings)}
    times = np.diff(run.times_s)
    fsp = float(np.median(times)) if len(times) else 1.0
    return Frames(path, "dicom", p, tuple(map(float, run.pixel_spacing)), fsp if fsp > 0 else 1.0, info)


def _read_dicom_plain(path: Path, reason: str = "") -> Frames:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except (InvalidDicomError, AttributeError, OSError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"cannot read DICOM {path}: {msg}" + (f" ({reason})" if reason else "")) from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or (frames > 1 and arr.shape[0] != frames):
        raise BadInput(f"DICOM {path}: expected grey frames [frames, rows, cols], got pixel array {arr.shape}")
    bits = int(getattr(ds, "BitsStored", 8 * arr.dtype.itemsize))
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInput(f"DICOM {path}: PhotometricInterpretation {photometric} is not a grey X-ray image")
    spacing = getattr(ds, "ImagerPixelSpacing", None) or getattr(ds, "PixelSpacing", None) or (1.0, 1.0)
    p = _display_to_p(arr, vmax=float(2 ** bits - 1), invert=photometric == "MONOCHROME1")
    return Frames(path, "dicom", p, (float(spacing[0]), float(spacing[1])),
                  info={"domain": f"display intensity, {bits} bits, {photometric}",
                        "modality": str(getattr(ds, "Modality", ""))})


def _read_stack(path: Path) -> Frames:
    from ..formats.volume import read_stack_with_spacing

    st = read_stack_with_spacing(path)
    if np.issubdtype(st.frames.dtype, np.integer):
        return Frames(path, "stack", _display_to_p(st.frames, vmax=float(st.frames.max())), st.pixel_spacing,
                      st.frame_spacing, {"domain": "display intensity (integer stack)"})
    return Frames(path, "stack", st.frames.astype(np.float32), st.pixel_spacing, st.frame_spacing,
                  {"domain": "line integral (float stack)"})


def iter_inputs(paths: list[str | Path]) -> Iterator[Path]:
    """Expand folders into their files (sorted); keep files as given."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
        else:
            yield p


def display_dsa(dsa: np.ndarray, ref: float | None = None) -> np.ndarray:
    """8-bit DSA display: vessels dark on white, ``ref`` (default P99.5 of the frame) → black."""
    ref = ref if ref is not None else float(np.percentile(dsa, 99.5))
    return (255 * (1 - np.clip(dsa / max(ref, 1e-6), 0, 1))).round().astype(np.uint8)
