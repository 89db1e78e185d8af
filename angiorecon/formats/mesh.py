"""Triangle meshes and polylines on disk (.vtp, .vtk, .stl, .obj, .ply) through VTK.

Coordinates are engine **world** coordinates in mm, which are ITK physical = **LPS** coordinates.
Files are written the way 3D Slicer writes models so that Slicer loads them in the right place:
legacy ``.vtk`` files get the header line ``3D Slicer output. SPACE=LPS`` and ``.vtp`` files a
field-data string array ``SPACE`` = ``LPS``; Slicer reads ``.stl``/``.obj``/``.ply`` without such
a tag as LPS too. Never write RAS coordinates here — only the MRML glue converts to RAS.

All writes are atomic (temporary file beside the target, then rename), so a cancelled task never
leaves half a mesh behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import BadInput

MESH_SUFFIXES = (".vtp", ".vtk", ".stl", ".obj", ".ply")
#: formats that can carry point/cell data arrays (others silently cannot; we refuse instead).
_ARRAY_SUFFIXES = (".vtp", ".vtk")
SLICER_VTK_HEADER = "3D Slicer output. SPACE=LPS"


def _suffix(path: Path) -> str:
    suf = path.suffix.lower()
    if suf not in MESH_SUFFIXES:
        raise BadInput(f"unsupported mesh format {path.name!r}; use one of {', '.join(MESH_SUFFIXES)}")
    return suf


def _vtk_array(name: str, values: np.ndarray):
    from vtkmodules.util.numpy_support import numpy_to_vtk

    arr = np.asarray(values)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"array {name!r} must be numeric, got {arr.dtype}")
    if arr.dtype.kind == "i" and arr.dtype.itemsize == 8:
        arr = arr.astype(np.int32) if np.abs(arr).max(initial=0) < 2**31 else arr
    v = numpy_to_vtk(np.ascontiguousarray(arr), deep=True)
    v.SetName(name)
    return v


def _polydata(vertices: np.ndarray, faces: np.ndarray | None, lines: Sequence[np.ndarray] | None,
              point_arrays: Mapping[str, np.ndarray] | None, cell_arrays: Mapping[str, np.ndarray] | None):
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    v = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64).reshape(-1, 3))
    pd = vtkPolyData()
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(v, deep=True))
    pd.SetPoints(pts)
    n_cells = 0
    if faces is not None:
        f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"face indices out of range [0, {len(v)})")
        cells = vtkCellArray()
        offsets = np.arange(0, 3 * len(f) + 1, 3, dtype=np.int64)
        cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                      numpy_to_vtkIdTypeArray(np.ascontiguousarray(f.reshape(-1)), deep=True))
        pd.SetPolys(cells)
        n_cells = len(f)
    if lines is not None:
        cells = vtkCellArray()
        for ids in lines:
            ids = np.asarray(ids, dtype=np.int64)
            cells.InsertNextCell(len(ids))
            for i in ids:
                cells.InsertCellPoint(int(i))
        pd.SetLines(cells)
        n_cells = len(lines)
    for name, values in (point_arrays or {}).items():
        values = np.asarray(values)
        if len(values) != len(v):
            raise ValueError(f"point array {name!r} has {len(values)} tuples for {len(v)} points")
        pd.GetPointData().AddArray(_vtk_array(name, values))
    for name, values in (cell_arrays or {}).items():
        values = np.asarray(values)
        if len(values) != n_cells:
            raise ValueError(f"cell array {name!r} has {len(values)} tuples for {n_cells} cells")
        pd.GetCellData().AddArray(_vtk_array(name, values))
    if "Normals" in (point_arrays or {}):
        pd.GetPointData().SetActiveNormals("Normals")
    return pd


def _write_polydata(path: Path, pd, suffix: str) -> None:
    from vtkmodules.vtkCommonCore import vtkStringArray
    from vtkmodules.vtkIOGeometry import vtkOBJWriter, vtkSTLWriter
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter
    from vtkmodules.vtkIOPLY import vtkPLYWriter
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    if suffix == ".vtp":
        space = vtkStringArray()
        space.SetName("SPACE")
        space.InsertNextValue("LPS")
        pd.GetFieldData().AddArray(space)
        w = vtkXMLPolyDataWriter()
        w.SetCompressorTypeToZLib()
        w.SetDataModeToAppended()
    elif suffix == ".vtk":
        w = vtkPolyDataWriter()
        w.SetHeader(SLICER_VTK_HEADER)
        w.SetFileTypeToBinary()
    elif suffix == ".stl":
        w = vtkSTLWriter()
        w.SetFileTypeToBinary()
    elif suffix == ".ply":
        w = vtkPLYWriter()
        w.SetFileTypeToBinary()
    else:
        w = vtkOBJWriter()
    w.SetFileName(str(tmp))
    w.SetInputData(pd)
    try:
        ok = w.Write()
        if not ok or not tmp.exists():
            raise OSError(f"VTK could not write {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
               point_arrays: Mapping[str, np.ndarray] | None = None,
               cell_arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a triangle mesh: ``vertices`` (V, 3) LPS world mm, ``faces`` (F, 3) vertex indices.

    ``point_arrays`` / ``cell_arrays`` (name → (V,) / (V, k) arrays; e.g. ``Normals``, ``Radius``)
    are kept in ``.vtp``/``.vtk``; ``.stl``/``.obj``/``.ply`` cannot carry them (only ``Normals``
    is dropped silently there, other arrays raise, so data is never lost unnoticed).
    """
    path = Path(path)
    suf = _suffix(path)
    dropped = [n for n in {**(point_arrays or {}), **(cell_arrays or {})} if n != "Normals"]
    if suf not in _ARRAY_SUFFIXES and dropped:
        raise BadInput(f"{path.name}: {suf} cannot store data arrays {dropped}; write .vtp or .vtk")
    pa = dict(point_arrays or {})
    if suf in (".stl", ".ply"):
        pa.pop("Normals", None)
    pd = _polydata(vertices, faces, None, pa, cell_arrays if suf in _ARRAY_SUFFIXES else None)
    _write_polydata(path, pd, suf)
    return path


def write_polylines(path: str | Path, polylines: Sequence[np.ndarray],
                    point_arrays: Mapping[str, Sequence[np.ndarray]] | None = None,
                    cell_arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write polylines (one cell per (M_i, 3) LPS world-mm array) to ``.vtp`` or ``.vtk``.

    ``point_arrays`` maps a name to one array per polyline (concatenated in order), e.g. the VMTK
    centerline arrays ``Radius``; ``cell_arrays`` maps a name to one value per polyline
    (``CenterlineIds``, ``GroupIds``, ``TractIds``, ``Blanking``).
    """
    path = Path(path)
    suf = _suffix(path)
    if suf not in _ARRAY_SUFFIXES:
        raise BadInput(f"{path.name}: polylines can only be written as .vtp or .vtk")
    polylines = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in polylines]
    verts = np.concatenate(polylines) if polylines else np.zeros((0, 3))
    starts = np.cumsum([0] + [len(p) for p in polylines])
    lines = [np.arange(starts[i], starts[i + 1]) for i in range(len(polylines))]
    pa = {}
    for name, parts in (point_arrays or {}).items():
        if len(parts) != len(polylines):
            raise ValueError(f"point array {name!r} needs one array per polyline")
        pa[name] = np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros(0)
    pd = _polydata(verts, None, lines, pa, cell_arrays)
    _write_polydata(path, pd, suf)
    return path


def _read_polydata(path: Path):
    from vtkmodules.vtkIOGeometry import vtkOBJReader, vtkSTLReader
    from vtkmodules.vtkIOLegacy import vtkPolyDataReader
    from vtkmodules.vtkIOPLY import vtkPLYReader
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    if not path.exists():
        raise BadInput(f"mesh file {path} does not exist")
    suf = _suffix(path)
    reader = {".vtp": vtkXMLPolyDataReader, ".vtk": vtkPolyDataReader, ".stl": vtkSTLReader,
              ".obj": vtkOBJReader, ".ply": vtkPLYReader}[suf]()
    reader.SetFileName(str(path))
    reader.Update()
    pd = reader.GetOutput()
    if pd is None or pd.GetNumberOfPoints() == 0:
        raise BadInput(f"cannot read mesh {path}: no points (corrupt file or wrong format)")
    if suf == ".vtk":
        header = reader.GetHeader() or ""
        if "SPACE=RAS" in header.upper():
            raise BadInput(f"mesh {path} is in RAS (header {header!r}); expected LPS world coordinates")
    space = pd.GetFieldData().GetAbstractArray("SPACE")
    if space is not None and space.GetNumberOfValues() and str(space.GetValue(0)).upper() == "RAS":
        raise BadInput(f"mesh {path} is in RAS (field data SPACE=RAS); expected LPS world coordinates")
    return pd


def _arrays(data) -> dict[str, np.ndarray]:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    out = {}
    for i in range(data.GetNumberOfArrays()):
        a = data.GetArray(i)
        if a is not None and a.GetName():
            out[a.GetName()] = vtk_to_numpy(a).copy()
    return out


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Read a triangle mesh → (vertices (V, 3) LPS world mm, faces (F, 3) int64, point arrays).

    Polygons with more than three corners are triangulated; files that declare RAS (Slicer header
    or ``SPACE`` field) are refused rather than silently mirrored.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter

    path = Path(path)
    pd = _read_polydata(path)
    tri = vtkTriangleFilter()
    tri.SetInputData(pd)
    tri.PassLinesOff()
    tri.PassVertsOff()
    tri.Update()
    out = tri.GetOutput()
    verts = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    polys = out.GetPolys()
    if polys.GetNumberOfCells() == 0:
        raise BadInput(f"mesh {path} has no surface triangles")
    conn = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    faces = conn.reshape(-1, 3)
    return verts, faces, _arrays(out.GetPointData())


def read_polylines(path: str | Path) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """Read polylines → (list of (M_i, 3) LPS world mm, point arrays split per line, cell arrays)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    path = Path(path)
    pd = _read_polydata(path)
    lines = pd.GetLines()
    if lines.GetNumberOfCells() == 0:
        raise BadInput(f"{path} contains no polylines")
    pts = vtk_to_numpy(pd.GetPoints().GetData()).astype(np.float64)
    offsets = vtk_to_numpy(lines.GetOffsetsArray()).astype(np.int64)
    conn = vtk_to_numpy(lines.GetConnectivityArray()).astype(np.int64)
    ids = [conn[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    parrays = {name: [a[i] for i in ids] for name, a in _arrays(pd.GetPointData()).items()}
    return [pts[i] for i in ids], parrays, _arrays(pd.GetCellData())
