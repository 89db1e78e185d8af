"""Volume sequences as Slicer ``.seq.nrrd`` files (4D filling over time, 2D+t projection runs).

A ``.seq.nrrd`` is a 4D NRRD whose last axis is a ``list`` of frames, with the Slicer-specific
keys ``axis 3 index type``/``axis 3 index values`` (``slicer_ecosystem.md`` §3.4). Slicer loads it
as a sequence node with a browser; ITK-based tools see a 4D image. Space is LPS, the engine's
world frame (never RAS on disk).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput
from ..geometry import VolumeGrid


def write_volume_sequence(path: str | Path, frames: np.ndarray, grid: VolumeGrid, index_values: Sequence[float],
                          *, index_name: str = "time", index_unit: str = "s") -> Path:
    """Write ``frames[T, z, y, x]`` on ``grid`` as a Slicer volume sequence (atomically)."""
    import nrrd

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != grid.shape:
        raise ValueError(f"frames must be [T, {grid.shape}], got {frames.shape}")
    if len(index_values) != frames.shape[0]:
        raise ValueError(f"{len(index_values)} index values for {frames.shape[0]} frames")
    data = np.ascontiguousarray(np.transpose(frames, (3, 2, 1, 0)))  # NRRD axis order x, y, z, list
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    header = OrderedDict([
        ("type", _nrrd_type(data.dtype)),
        ("dimension", 4),
        ("space", "left-posterior-superior"),
        ("sizes", np.array(data.shape)),
        ("space directions", np.vstack([grid.affine[:3, :3].T, np.full(3, np.nan)])),
        ("kinds", ["domain", "domain", "domain", "list"]),
        ("encoding", "gzip"),
        ("space origin", grid.origin),
        ("axis 3 index type", "numeric"),
        ("axis 3 index values", " ".join(f"{v:g}" for v in index_values)),
        ("axis 3 quantity", index_name),
        ("axis 3 unit", index_unit),
        ("DataNodeClassName", "vtkMRMLScalarVolumeNode"),
    ])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    nrrd.write(str(tmp), data, header, custom_field_map={
        "axis 3 index type": "string", "axis 3 index values": "string", "axis 3 quantity": "string",
        "axis 3 unit": "string", "DataNodeClassName": "string"})
    os.replace(tmp, path)
    return path


def read_volume_sequence(path: str | Path) -> tuple[np.ndarray, VolumeGrid, np.ndarray]:
    """Read a ``.seq.nrrd`` written by :func:`write_volume_sequence` → (frames[T,z,y,x], grid, index values)."""
    import nrrd

    try:
        data, header = nrrd.read(str(path))
    except (OSError, nrrd.NRRDError) as exc:
        raise BadInput(f"cannot read sequence {path}: {exc}") from None
    if data.ndim != 4:
        raise BadInput(f"{path} is not a 4D sequence (dimension {data.ndim})")
    dirs = np.asarray(header["space directions"], dtype=np.float64)[:3]
    aff = np.eye(4)
    aff[:3, :3] = dirs.T
    aff[:3, 3] = np.asarray(header["space origin"], dtype=np.float64)
    frames = np.transpose(data, (3, 2, 1, 0))
    values = np.array([float(v) for v in str(header.get("axis 3 index values", "")).split()])
    if values.size != frames.shape[0]:
        values = np.arange(frames.shape[0], dtype=np.float64)
    return frames, VolumeGrid(frames.shape[1:], aff), values


def _nrrd_type(dtype: np.dtype) -> str:
    return {"float32": "float", "float64": "double", "uint8": "uint8", "int16": "int16",
            "uint16": "uint16", "int32": "int32"}[np.dtype(dtype).name]
