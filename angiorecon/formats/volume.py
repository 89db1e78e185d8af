"""Volumes and projection stacks on disk (NIfTI / NRRD / MHA via SimpleITK).

Volumes are numpy ``[z, y, x]`` + :class:`~angiorecon.geometry.VolumeGrid`; they are written so
that ITK/SimpleITK physical coordinates equal engine world coordinates (never RAS). Projection
stacks are ``[frames, rows, cols]`` and are written in the same SimpleITK array order with the
detector pixel spacing (row/col) as in-plane spacing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..geometry import VolumeGrid

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeGrid]:
    """Read a 3D image → (array ``[z, y, x]`` float32 or original integer type, grid)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise BadInput(f"volume file {path} does not exist")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise BadInput(f"cannot read volume {path}: {first}") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"volume {path} must be a 3D scalar image, got {img.GetDimension()}D with "
                       f"{img.GetNumberOfComponentsPerPixel()} components")
    arr = sitk.GetArrayFromImage(img)
    return arr, grid_from_image(img)


def grid_from_image(img: "object") -> VolumeGrid:
    """VolumeGrid from a SimpleITK image's size, spacing, origin and direction."""
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = direction * spacing[None, :]
    aff[:3, 3] = img.GetOrigin()
    nx, ny, nz = img.GetSize()
    return VolumeGrid((nz, ny, nx), aff)


def write_volume(path: str | Path, array: np.ndarray, grid: VolumeGrid, *, compress: bool = True) -> Path:
    """Write ``array[z, y, x]`` with the grid's spacing/origin/direction (atomically: temp + rename)."""
    import SimpleITK as sitk

    path = Path(path)
    arr = np.asarray(array)
    if arr.shape != grid.shape:
        raise ValueError(f"array shape {arr.shape} does not match grid shape {grid.shape}")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(tuple(float(s) for s in grid.spacing))
    img.SetOrigin(tuple(float(o) for o in grid.origin))
    img.SetDirection(tuple(float(d) for d in grid.direction.reshape(-1)))
    _write_atomic(img, path, compress)
    return path


def write_stack(path: str | Path, stack: np.ndarray, pixel_spacing: tuple[float, float] = (1.0, 1.0),
                frame_spacing: float = 1.0, *, compress: bool = True) -> Path:
    """Write a projection stack ``[frames, rows, cols]`` (SimpleITK order; spacing = (col, row, frame))."""
    import SimpleITK as sitk

    arr = np.asarray(stack)
    if arr.ndim != 3:
        raise ValueError(f"projection stack must be [frames, rows, cols], got shape {arr.shape}")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing((float(pixel_spacing[1]), float(pixel_spacing[0]), float(frame_spacing)))
    _write_atomic(img, Path(path), compress)
    return Path(path)


@dataclass(frozen=True)
class StackFile:
    """A stack as stored: frames in the file's own dtype (integer display pixels stay integers) and
    the spacing written by :func:`write_stack`."""

    frames: np.ndarray                     #: [frames, rows, cols]
    pixel_spacing: tuple[float, float]     #: (row, col) in mm
    frame_spacing: float


def read_stack_with_spacing(path: str | Path) -> StackFile:
    """Read a stack ``[frames, rows, cols]`` (a 2D image is one frame) with its spacing, dtype kept."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise BadInput(f"projection file {path} does not exist")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise BadInput(f"cannot read projections {path}: {str(exc).strip().splitlines()[-1]}") from None
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"projections {path} must be a scalar [frames, rows, cols] stack, got shape {arr.shape}")
    sp = img.GetSpacing()
    return StackFile(arr, (float(sp[1]), float(sp[0])), float(sp[2]) if len(sp) > 2 else 1.0)


def read_stack(path: str | Path) -> np.ndarray:
    """Read a projection stack ``[frames, rows, cols]`` as float32."""
    return read_stack_with_spacing(path).frames.astype(np.float32, copy=False)


def _write_atomic(img: "object", path: Path, compress: bool) -> None:
    import SimpleITK as sitk

    suffix = _suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise BadInput(f"unsupported image format {path.name!r}; use one of {', '.join(VOLUME_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    sitk.WriteImage(img, str(tmp), compress)
    os.replace(tmp, path)
