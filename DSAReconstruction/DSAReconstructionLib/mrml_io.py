"""Put engine results into an MRML scene: volumes, segmentations, models, curves, sequences, tables.

Every function takes the scene as its first argument (inside Slicer ``slicer.mrmlScene``; in tests
a slicer-core scene from :mod:`.headless`) and imports only numpy, VTK and MRML classes, never
``qt``/``ctk``/``slicer.app``.

Coordinates: engine files and arrays are in the engine world frame = ITK physical = **LPS** mm.
MRML nodes hold **RAS**, so the in-memory constructors convert with ``RAS = diag(-1, -1, 1)·LPS``.
File readers use Slicer's own storage nodes, which read LPS files (NRRD/NIfTI, ``.mrk.json``,
models tagged ``SPACE=LPS``) into RAS themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer

#: RAS = LPS_TO_RAS @ LPS (homogeneous); its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
MODEL_SUFFIXES = (".vtp", ".vtk", ".stl", ".ply", ".obj")
TABLE_SUFFIXES = (".csv", ".tsv")
#: 2D pictures the engine writes for the reader (reprojection overlays), loaded as colour images.
PICTURE_SUFFIXES = (".png",)
#: roles whose pictures are loaded (other pictures, e.g. previews, stay files).
PICTURE_ROLES = frozenset({"renderings", "overlays"})
#: manifest roles that are files for the user, not scene content.
NOT_LOADED_ROLES = frozenset({"log", "dataset", "dicom", "preview", "other"})
#: roles whose image files are projection stacks [frames, rows, cols] → 2D+t sequences.
STACK_ROLES = frozenset({"projections", "renderings", "images"})
#: roles whose image files are masks → segmentations.
MASK_ROLES = frozenset({"vessel_mask", "segmentation"})
#: longest list of values shown in a metrics table cell (longer ones stay in the JSON file).
MAX_TABLE_LIST = 8


# -- geometry helpers ----------------------------------------------------------------------------
def lps_to_ras_matrix(ijk_to_lps: np.ndarray) -> np.ndarray:
    """IJK→RAS from an IJK→LPS (engine world) affine."""
    return LPS_TO_RAS @ np.asarray(ijk_to_lps, dtype=float)


def lps_to_ras_points(points: np.ndarray) -> np.ndarray:
    """(N, 3) LPS points → RAS (the same flip in both directions)."""
    return np.asarray(points, dtype=float).reshape(-1, 3) * [-1.0, -1.0, 1.0]


def _vtk_matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def ijk_to_ras(volume_node: Any) -> np.ndarray:
    """The 4×4 IJK→RAS matrix of a volume node as numpy."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for compound in (".nii.gz", ".seq.nrrd", ".seg.nrrd", ".mrk.json"):
        if name.endswith(compound):
            return compound
    return path.suffix.lower()


def _name(path: Path) -> str:
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _read_with(scene: Any, storage_class: str, node: Any, path: Path, what: str = "") -> None:
    """Read ``path`` into ``node`` through a new storage node; on failure leave neither in the scene.

    Engine meshes are LPS files (as :func:`_write_with` writes them), not Slicer's RAS default.
    """
    storage = scene.AddNewNodeByClass(storage_class)
    if storage.IsA("vtkMRMLModelStorageNode"):
        storage.SetCoordinateSystem(slicer.vtkMRMLStorageNode.CoordinateSystemLPS)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"Slicer could not read {what + ' ' if what else ''}{path}")


def _write_with(scene: Any, storage_class: str, node: Any, path: str | Path) -> Path:
    """Write ``node`` with a temporary storage node (the node's own storage stays as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = scene.AddNewNodeByClass(storage_class)
    try:
        if storage.IsA("vtkMRMLModelStorageNode"):
            storage.SetCoordinateSystem(slicer.vtkMRMLStorageNode.CoordinateSystemLPS)
        storage.SetFileName(str(path))
        if not storage.WriteData(node):
            raise OSError(f"Slicer could not write {node.GetName()} to {path}")
    finally:
        scene.RemoveNode(storage)
    return path


def save_volume(scene: Any, volume_node: Any, path: str | Path) -> Path:
    """Write a scene volume as an engine input (NRRD/NIfTI: LPS on disk)."""
    return _write_with(scene, "vtkMRMLVolumeArchetypeStorageNode", volume_node, path)


def save_model(scene: Any, model_node: Any, path: str | Path) -> Path:
    """Write a scene model as an engine input (LPS on disk, arrays kept in ``.vtp``/``.vtk``)."""
    return _write_with(scene, "vtkMRMLModelStorageNode", model_node, path)


def save_sequence(scene: Any, sequence_node: Any, path: str | Path) -> Path:
    """Write a volume sequence as ``.seq.nrrd`` (index values and per-frame attributes kept)."""
    return _write_with(scene, "vtkMRMLVolumeSequenceStorageNode", sequence_node, path)


# -- volumes -------------------------------------------------------------------------------------
def add_volume(scene: Any, array: np.ndarray, ijk_to_lps: np.ndarray, name: str, *,
               labelmap: bool = False) -> Any:
    """Scalar (or labelmap) volume from ``array[k, j, i]`` (= engine ``[z, y, x]``) and its IJK→LPS affine."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(arr))
    node.SetIJKToRASMatrix(_vtk_matrix(lps_to_ras_matrix(ijk_to_lps)))
    node.CreateDefaultDisplayNodes()
    return node


def load_volume(scene: Any, path: str | Path, name: str | None = None, *, labelmap: bool = False,
                color_node_id: str | None = None) -> Any:
    """Volume from a NRRD/NIfTI/MHA file (LPS on disk; Slicer's reader converts to RAS)."""
    path = Path(path)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                                   name or _name(path))
    _read_with(scene, "vtkMRMLVolumeArchetypeStorageNode", node, path)
    node.CreateDefaultDisplayNodes()
    if color_node_id:
        node.GetDisplayNode().SetAndObserveColorNodeID(color_node_id)
    return node


def load_picture(scene: Any, path: str | Path, name: str | None = None) -> Any:
    """A PNG as a colour (vector) volume, shown upright in the axial slice view.

    The PNG reader stores rows bottom-up, so IJK→RAS = diag(−1, 1, 1) puts the picture's top row
    at the top of the view and keeps its left on the left.
    """
    path = Path(path)
    reader = vtk.vtkPNGReader()
    if not reader.CanReadFile(str(path)):
        raise OSError(f"{path} is not a PNG file")
    reader.SetFileName(str(path))
    reader.Update()
    image = vtk.vtkImageData()
    image.DeepCopy(reader.GetOutput())
    image.SetOrigin(0.0, 0.0, 0.0)
    image.SetSpacing(1.0, 1.0, 1.0)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name or _name(path))
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(_vtk_matrix(np.diag([-1.0, 1.0, 1.0, 1.0])))
    node.CreateDefaultDisplayNodes()
    return node


# -- segmentations -------------------------------------------------------------------------------
def segmentation_from_labelmap(scene: Any, labelmap_node: Any, name: str,
                               segment_names: Sequence[str] | None = None) -> Any:
    """Segmentation node with one segment per non-zero label of a labelmap node (closed surface too)."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(labelmap_node)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap_node, seg):
        raise RuntimeError(f"could not import labelmap {labelmap_node.GetName()} into a segmentation")
    segmentation = seg.GetSegmentation()
    for i, segment_name in enumerate(segment_names or ()):
        if i < segmentation.GetNumberOfSegments():
            segmentation.GetNthSegment(i).SetName(segment_name)
    seg.CreateClosedSurfaceRepresentation()
    return seg


def add_segmentation(scene: Any, mask: np.ndarray, ijk_to_lps: np.ndarray, name: str, *,
                     segment_names: Sequence[str] | None = None) -> Any:
    """Segmentation from an integer/boolean mask ``[z, y, x]`` (label value → segment)."""
    mask = np.asarray(mask)
    dtype = np.uint8 if mask.max(initial=0) < 256 else np.int32
    label = add_volume(scene, mask.astype(dtype), ijk_to_lps, f"{name} labels", labelmap=True)
    try:
        return segmentation_from_labelmap(scene, label, name, segment_names)
    finally:
        scene.RemoveNode(label)


def load_segmentation(scene: Any, path: str | Path, name: str | None = None,
                      segment_names: Sequence[str] | None = None) -> Any:
    """Segmentation from a ``.seg.nrrd`` or from a mask volume file (label value → segment)."""
    path = Path(path)
    if _suffix(path) == ".seg.nrrd":
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or _name(path))
        _read_with(scene, "vtkMRMLSegmentationStorageNode", seg, path)
        seg.CreateDefaultDisplayNodes()
        seg.CreateClosedSurfaceRepresentation()
        return seg
    label = load_volume(scene, path, f"{name or _name(path)} labels", labelmap=True)
    try:
        return segmentation_from_labelmap(scene, label, name or _name(path), segment_names)
    finally:
        scene.RemoveNode(label.GetStorageNode())
        scene.RemoveNode(label)


def save_segmentation_labelmap(scene: Any, segmentation_node: Any, reference_volume: Any, path: str | Path) -> Path:
    """Write a segmentation as a labelmap on the reference volume's grid (segment i → label i+1)."""
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{segmentation_node.GetName()} export")
    try:
        segment_ids = vtk.vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(segment_ids)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, segment_ids, label, reference_volume):
            raise OSError(f"could not export segmentation {segmentation_node.GetName()} to a labelmap")
        return _write_with(scene, "vtkMRMLVolumeArchetypeStorageNode", label, path)
    finally:
        scene.RemoveNode(label)


def save_frame_mask(scene: Any, segmentation_node: Any, frame: int, path: str | Path) -> Path:
    """Write the segments drawn on frame ``frame`` of an XA run as a 2D mask ``[1, rows, cols]``.

    The segmentation is exported on its own reference geometry (the run it was drawn on in the
    Segment Editor: columns, rows, frames as Slicer's DICOM reader lays them out, which is the
    engine's ``[frames, rows, cols]`` order); any segment counts as vessel.
    """
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{segmentation_node.GetName()} export")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(
                segmentation_node, label, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise ValueError(f"segmentation {segmentation_node.GetName()} could not be exported (no segments?)")
        frames = slicer.util.arrayFromVolume(label)
        if not 0 <= frame < frames.shape[0]:
            raise ValueError(f"segmentation {segmentation_node.GetName()} covers {frames.shape[0]} frame(s); "
                             f"frame {frame} is outside")
        mask = (frames[frame] > 0).astype(np.uint8)
        if not mask.any():
            raise ValueError(f"segmentation {segmentation_node.GetName()} has nothing drawn on frame {frame}")
        sx, sy, _ = label.GetSpacing()
        out = add_volume(scene, mask[None], np.diag([sx, sy, 1.0, 1.0]), f"{segmentation_node.GetName()} mask")
        try:
            return save_volume(scene, out, path)
        finally:
            scene.RemoveNode(out)
    finally:
        scene.RemoveNode(label)


def save_stack(scene: Any, sequence_node: Any, path: str | Path) -> Path:
    """Write a sequence of single-slice frames as an engine projection stack ``[frames, rows, cols]``.

    In-plane spacing comes from the first frame; the frame axis has unit spacing. Frames must all
    have the first frame's size.
    """
    n = sequence_node.GetNumberOfDataNodes()
    if n == 0:
        raise ValueError(f"sequence {sequence_node.GetName()} has no frames")
    frames = [slicer.util.arrayFromVolume(sequence_node.GetNthDataNode(i)) for i in range(n)]
    if any(f.shape != frames[0].shape or f.shape[0] != 1 for f in frames):
        raise ValueError(f"sequence {sequence_node.GetName()}: frames must be single slices of one size")
    sx, sy, _ = sequence_node.GetNthDataNode(0).GetSpacing()
    stack = add_volume(scene, np.concatenate(frames), np.diag([sx, sy, 1.0, 1.0]), f"{sequence_node.GetName()} stack")
    try:
        return save_volume(scene, stack, path)
    finally:
        scene.RemoveNode(stack)


# -- models --------------------------------------------------------------------------------------
def polydata_lps_to_ras(polydata: Any) -> Any:
    """Copy of a polydata moved from LPS to RAS; point/cell arrays are kept, normals rotated."""
    transform = vtk.vtkTransform()
    transform.Scale(-1.0, -1.0, 1.0)
    flt = vtk.vtkTransformPolyDataFilter()
    flt.SetTransform(transform)
    flt.SetInputData(polydata)
    flt.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(flt.GetOutput())
    return out


def add_model(scene: Any, polydata: Any, name: str, *, lps: bool = True,
              color: Sequence[float] | None = None) -> Any:
    """Model node from an in-memory polydata (engine LPS unless ``lps=False``)."""
    node = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    node.SetAndObservePolyData(polydata_lps_to_ras(polydata) if lps else polydata)
    node.CreateDefaultDisplayNodes()
    if color is not None:
        node.GetDisplayNode().SetColor(*color)
    return node


def load_model(scene: Any, path: str | Path, name: str | None = None, *,
               color: Sequence[float] | None = None) -> Any:
    """Model from ``.vtp/.vtk/.stl/.ply/.obj`` (LPS files, as the engine writes them) with all arrays."""
    path = Path(path)
    node = scene.AddNewNodeByClass("vtkMRMLModelNode", name or _name(path))
    _read_with(scene, "vtkMRMLModelStorageNode", node, path, what="model")
    node.CreateDefaultDisplayNodes()
    if color is not None:
        node.GetDisplayNode().SetColor(*color)
    return node


# -- markups -------------------------------------------------------------------------------------
def add_curve(scene: Any, points: np.ndarray, name: str, *, radius: np.ndarray | None = None,
              lps: bool = True, attributes: Mapping[str, Any] | None = None,
              color: Sequence[float] | None = None) -> Any:
    """Centerline curve (markups curve) with an optional per-point ``Radius`` measurement in mm.

    Laid out like SlicerVMTK's centerline curves: linear segments through the control points, the
    radius as a static measurement so VMTK's cross-section tools and
    ``arrayFromMarkupsCurveData(curve, "Radius", world=True)`` find it.
    """
    pts = lps_to_ras_points(points) if lps else np.asarray(points, dtype=float).reshape(-1, 3)
    curve = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", name)
    curve.CreateDefaultDisplayNodes()
    curve.SetCurveTypeToLinear()
    curve.SetNumberOfPointsPerInterpolatingSegment(1)
    vtk_points = vtk.vtkPoints()
    for p in pts:
        vtk_points.InsertNextPoint(*p)
    curve.SetControlPointPositionsWorld(vtk_points)
    if radius is not None:
        values = np.asarray(radius, dtype=float).reshape(-1)
        if len(values) != len(pts):
            raise ValueError(f"curve {name!r}: {len(values)} radii for {len(pts)} points")
        add_point_measurement(curve, "Radius", values, "mm")
    for key, value in (attributes or {}).items():
        curve.SetAttribute(str(key), str(value))
    display = curve.GetDisplayNode()
    display.SetPointLabelsVisibility(False)
    if color is not None:
        display.SetSelectedColor(*color)
        display.SetColor(*color)
    return curve


def add_point_measurement(markup: Any, measurement_name: str, values: np.ndarray, units: str = "") -> Any:
    """Attach a per-control-point static measurement (e.g. ``Radius``) to a markups node."""
    array = vtk.vtkDoubleArray()
    array.SetName(measurement_name)
    for v in np.asarray(values, dtype=float).reshape(-1):
        array.InsertNextValue(float(v))
    measurement = slicer.vtkMRMLStaticMeasurement()
    measurement.SetName(measurement_name)
    measurement.SetUnits(units)
    measurement.SetPrintFormat("%5.3f %s")
    measurement.SetControlPointValues(array)
    markup.AddMeasurement(measurement)
    return measurement


def load_markups(scene: Any, path: str | Path) -> list[Any]:
    """Every markup of a ``.mrk.json`` file (e.g. one curve per vessel branch), in file order."""
    path = Path(path)
    try:
        count = len(json.loads(path.read_text())["markups"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OSError(f"{path} is not a markups JSON file: {exc}") from None
    storage = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    nodes = []
    for index in range(count):
        node = storage.AddNewMarkupsNodeFromFile(str(path), "", index)
        if node is None:
            raise OSError(f"Slicer could not read markup {index} of {path}")
        nodes.append(node)
    scene.RemoveNode(storage)
    return nodes


# -- sequences -----------------------------------------------------------------------------------
def add_sequence(scene: Any, frames: np.ndarray, name: str, *, ijk_to_lps: np.ndarray | None = None,
                 index_values: Sequence[float] | None = None, index_name: str = "time", index_unit: str = "s",
                 frame_attributes: Sequence[Mapping[str, Any]] | None = None,
                 playback_fps: float | None = None) -> tuple[Any, Any]:
    """Volume sequence + browser from ``frames[t, z, y, x]`` (4D) or ``frames[t, rows, cols]`` (2D+t).

    2D frames become single-slice volumes. ``ijk_to_lps`` is the IJK→LPS affine shared by all
    frames (for 2D frames: columns, rows, frame normal); by default unit spacing, which shows the
    images upright in the axial view as Slicer's DICOM plugin does (IJK→RAS = diag(−1, −1, 1)).
    ``frame_attributes[i]`` become node attributes of frame ``i`` (kept in ``.seq.nrrd``).
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise ValueError(f"sequence {name!r}: frames must be [t, z, y, x] or [t, rows, cols], got {frames.shape}")
    n = frames.shape[0]
    values = list(range(n)) if index_values is None else list(index_values)
    if len(values) != n:
        raise ValueError(f"sequence {name!r}: {len(values)} index values for {n} frames")
    if frame_attributes is not None and len(frame_attributes) != n:
        raise ValueError(f"sequence {name!r}: {len(frame_attributes)} attribute sets for {n} frames")
    ras = _vtk_matrix(lps_to_ras_matrix(np.eye(4) if ijk_to_lps is None else ijk_to_lps))

    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    seq.SetIndexName(index_name)
    seq.SetIndexUnit(index_unit)
    seq.SetIndexType(seq.NumericIndex)
    frame_node = slicer.vtkMRMLScalarVolumeNode()
    for i in range(n):
        frame = frames[i][None] if frames.ndim == 3 else frames[i]
        slicer.util.updateVolumeFromArray(frame_node, np.ascontiguousarray(frame))
        frame_node.SetIJKToRASMatrix(ras)
        for key in list(frame_node.GetAttributeNames() or ()):
            frame_node.RemoveAttribute(key)
        for key, value in (frame_attributes[i] if frame_attributes else {}).items():
            frame_node.SetAttribute(str(key), str(value))
        seq.SetDataNodeAtValue(frame_node, _index_text(values[i]))

    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    browser.SetPlaybackActive(False)
    if playback_fps:
        browser.SetPlaybackRateFps(float(playback_fps))
    browser.SetSelectedItemNumber(0)
    proxy = browser.GetProxyNode(seq)
    if proxy is not None:
        proxy.CreateDefaultDisplayNodes()
    return seq, browser


def _index_text(value: float) -> str:
    return f"{float(value):.6g}"


def add_browser(scene: Any, sequence: Any, name: str | None = None) -> Any:
    """Browser (with proxy node) for an existing sequence node."""
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", name or f"{sequence.GetName()} browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetSelectedItemNumber(0)
    return browser


def browser_of(scene: Any, sequence: Any) -> Any:
    """The first browser that plays ``sequence`` (None if none does)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if browser.IsSynchronizedSequenceNode(sequence, True):
            return browser
    return None


def load_volume_sequence(scene: Any, path: str | Path, name: str | None = None) -> tuple[Any, Any]:
    """A ``.seq.nrrd`` (4D NRRD with index values and per-item attributes) + browser."""
    path = Path(path)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name or _name(path))
    _read_with(scene, "vtkMRMLVolumeSequenceStorageNode", seq, path)
    return seq, add_browser(scene, seq)


def load_stack_sequence(scene: Any, path: str | Path, name: str | None = None, *,
                        index_values: Sequence[float] | None = None, index_name: str = "frame",
                        index_unit: str = "", frame_attributes: Sequence[Mapping[str, Any]] | None = None
                        ) -> tuple[Any, Any]:
    """A projection stack file ``[frames, rows, cols]`` as a 2D+t sequence with the file's pixel spacing."""
    path = Path(path)
    stack = load_volume(scene, path, f"{name or _name(path)} stack")
    try:
        frames = slicer.util.arrayFromVolume(stack).copy()
        spacing = stack.GetSpacing()
    finally:
        scene.RemoveNode(stack.GetStorageNode())
        scene.RemoveNode(stack)
    return add_sequence(scene, frames, name or _name(path), ijk_to_lps=np.diag([spacing[0], spacing[1], 1.0, 1.0]),
                        index_values=index_values, index_name=index_name, index_unit=index_unit,
                        frame_attributes=frame_attributes)


# -- tables --------------------------------------------------------------------------------------
def add_table(scene: Any, metrics: Mapping[str, Any], name: str) -> Any:
    """Table node from metrics.

    ``{"fdk": {"dice": 0.8}, "vpal": {...}}`` (one flat dict per method) → one row per key (column
    ``Name``) and one column per metric; anything else → columns ``Metric``/``Value`` with nested
    sections flattened to dotted names (``surface.hd95``). Lists longer than
    :data:`MAX_TABLE_LIST` values stay in the JSON file only.
    """
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    rows = list(metrics.values())
    if rows and all(isinstance(r, Mapping) and not any(isinstance(v, (Mapping, list)) for v in r.values())
                    for r in rows):
        columns = list(dict.fromkeys(k for row in rows for k in row))
        _add_column(table, "Name", list(metrics))
        for col in columns:
            _add_column(table, col, [row.get(col) for row in rows])
    else:
        flat = dict(_flatten(metrics))
        _add_column(table, "Metric", list(flat))
        _add_column(table, "Value", list(flat.values()))
    return table


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> Any:
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            if len(value) <= MAX_TABLE_LIST:
                yield f"{prefix}{key}", ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
        else:
            yield f"{prefix}{key}", value


def _add_column(table: Any, name: str, values: list[Any]) -> None:
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) or v is None for v in values)
    if numeric:
        column = numpy_support.numpy_to_vtk(np.array([np.nan if v is None else float(v) for v in values]), deep=True)
    else:
        column = vtk.vtkStringArray()
        for v in values:
            column.InsertNextValue("" if v is None else str(v))
    column.SetName(name)
    table.AddColumn(column)


def load_table(scene: Any, path: str | Path, name: str | None = None) -> Any:
    """Table from a metrics ``.json`` (see :func:`add_table`) or a ``.csv``/``.tsv`` file."""
    path = Path(path)
    if _suffix(path) == ".json":
        return add_table(scene, json.loads(path.read_text()), name or _name(path))
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name or _name(path))
    _read_with(scene, "vtkMRMLTableStorageNode", table, path)
    return table


# -- manifests -----------------------------------------------------------------------------------
@dataclass
class LoadedOutputs:
    """What :func:`load_manifest` did: nodes by role, and outputs left as files."""

    manifest: dict[str, Any]
    nodes: dict[str, list[Any]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def first(self, role: str) -> Any:
        """The first node loaded for ``role`` (None if none)."""
        return (self.nodes.get(role) or [None])[0]


def is_loadable(output: Mapping[str, Any], folder: Path) -> bool:
    """Whether :func:`load_output` can put this manifest output into the scene.

    Folders, files for the user (logs, datasets, DICOM exports, previews) and file types without a
    scene representation (e.g. a ground-truth ``.json``) are not.
    """
    path = folder / output["path"]
    if output["role"] in NOT_LOADED_ROLES or not path.is_file():
        return False
    suffix = _suffix(path)
    if suffix in PICTURE_SUFFIXES:
        return output["role"] in PICTURE_ROLES
    return (suffix in (".mrk.json", ".seq.nrrd", ".seg.nrrd") or suffix in VOLUME_SUFFIXES
            or suffix in MODEL_SUFFIXES or suffix in TABLE_SUFFIXES
            or (suffix == ".json" and output["role"] in ("metrics", "table")))


def load_output(scene: Any, output: Mapping[str, Any], folder: Path) -> list[Any]:
    """Load one manifest output (``{"role", "path", ...}``) by its file type and role."""
    if not is_loadable(output, folder):
        raise ValueError(f"{output['role']!r} output {output['path']} has no scene representation")
    role = output["role"]
    path = folder / output["path"]
    name = output.get("name") or _name(path)
    suffix = _suffix(path)
    if suffix == ".mrk.json":
        return load_markups(scene, path)
    if suffix in PICTURE_SUFFIXES:
        return [load_picture(scene, path, name)]
    if suffix == ".seq.nrrd":
        return list(load_volume_sequence(scene, path, name))
    if suffix == ".seg.nrrd" or (role in MASK_ROLES and suffix in VOLUME_SUFFIXES):
        return [load_segmentation(scene, path, name, output.get("segment_names"))]
    if suffix in MODEL_SUFFIXES:
        return [load_model(scene, path, name, color=output.get("color"))]
    if suffix in TABLE_SUFFIXES or suffix == ".json":
        return [load_table(scene, path, name)]
    if role in STACK_ROLES or role == "sequence":
        return list(load_stack_sequence(scene, path, name, index_values=output.get("index_values"),
                                        index_name=output.get("index_name", "frame"),
                                        index_unit=output.get("index_unit", ""),
                                        frame_attributes=output.get("frame_attributes")))
    color = "vtkMRMLColorTableNodeRainbow" if role == "time_to_peak" else None
    return [load_volume(scene, path, name, color_node_id=color)]


def load_manifest(scene: Any, manifest_path: str | Path, roles: Sequence[str] | None = None) -> LoadedOutputs:
    """Load every output of a finished run into the scene, by role (see ``angiorecon.worker``).

    Outputs that are not scene content (see :func:`is_loadable`) are listed in ``skipped``;
    ``roles`` restricts loading to those roles.
    """
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    loaded = LoadedOutputs(manifest=manifest)
    for output in manifest.get("outputs", []):
        if (roles is not None and output["role"] not in roles) or not is_loadable(output, manifest_path.parent):
            loaded.skipped.append(output)
            continue
        loaded.nodes.setdefault(output["role"], []).extend(load_output(scene, output, manifest_path.parent))
    return loaded


# -- DICOM provenance ----------------------------------------------------------------------------
#: tags read from the DICOM database (study of an instance, modality of a file).
STUDY_UID_TAG = "0020,000D"
MODALITY_TAG = "0008,0060"


def source_instance_uids(scene: Any, node: Any) -> list[str]:
    """SOP instance UIDs of the DICOM files a node (or a sequence's frames) was loaded from.

    Slicer's DICOM plugins record them as the node attribute ``DICOM.instanceUIDs`` and as the
    subject-hierarchy UID ``DICOMInstanceUID`` of the series item (space separated).
    """
    nodes = [node]
    if node.IsA("vtkMRMLSequenceNode") and node.GetNumberOfDataNodes():
        nodes.append(node.GetNthDataNode(0))
    for candidate in nodes:
        text = candidate.GetAttribute("DICOM.instanceUIDs")
        if text:
            return text.split()
    sh = scene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(node) if sh is not None else 0
    text = sh.GetItemUID(item, "DICOMInstanceUID") if item else ""
    return text.split() if text else []


def source_dicom_files(scene: Any, node: Any, database: Any) -> list[str]:
    """The files of the run a node was loaded from plus the study's other runs of the same modality.

    The engine pairs fill and mask runs itself, so it gets the whole study's runs of that modality
    (XA); ``database`` is Slicer's ``ctkDICOMDatabase`` (``slicer.dicomDatabase``).
    """
    uids = source_instance_uids(scene, node)
    if not uids or database is None:
        raise ValueError(f"{node.GetName()} was not loaded from DICOM (no instance UIDs); "
                         f"choose the DICOM files or folder instead")
    files = [database.fileForInstance(uid) for uid in uids]
    files = [f for f in files if f]
    if not files:
        raise ValueError(f"the DICOM files of {node.GetName()} are no longer in the DICOM database")
    modality = database.fileValue(files[0], MODALITY_TAG)
    study = database.instanceValue(uids[0], STUDY_UID_TAG)
    for series in (database.seriesForStudy(study) if study else []):
        series_files = list(database.filesForSeries(series))
        if series_files and series_files[0] not in files and database.fileValue(series_files[0], MODALITY_TAG) == modality:
            files += series_files
    return files


# -- view coverage -------------------------------------------------------------------------------
def add_coverage_plot(scene: Any, angles_deg: Sequence[float], chosen: Sequence[int], name: str, *,
                      times_s: Sequence[float] | None = None) -> tuple[Any, Any]:
    """Table + plot chart of the run's angle coverage: angle of every frame, the chosen views marked.

    Table columns ``Frame``, ``Angle (deg)``, ``Chosen angle (deg)`` (NaN where the frame is not
    used), ``Time (s)`` when times are known. The chart plots angle against frame number for all
    frames (line) and for the chosen views (markers), so gaps in the angular sampling show.
    """
    angles = np.asarray(angles_deg, dtype=float).reshape(-1)
    n = len(angles)
    picked = np.asarray(sorted(set(int(i) for i in chosen)), dtype=int)
    if picked.size and (picked.min() < 0 or picked.max() >= n):
        raise ValueError(f"chosen views {picked.tolist()} outside the run's {n} frames")
    chosen_angles = np.full(n, np.nan)
    chosen_angles[picked] = angles[picked]
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
    _add_column(table, "Frame", list(range(n)))
    _add_column(table, "Angle (deg)", angles.tolist())
    _add_column(table, "Chosen angle (deg)", chosen_angles.tolist())
    if times_s is not None:
        times = np.asarray(times_s, dtype=float).reshape(-1)
        if len(times) != n:
            raise ValueError(f"{len(times)} frame times for {n} frames")
        _add_column(table, "Time (s)", times.tolist())
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(f"{name}: {picked.size} of {n} views")
    chart.SetXAxisTitle("frame")
    chart.SetYAxisTitle("C-arm angle (deg)")
    for label, column, line, marker, color in (
            ("all frames", "Angle (deg)", "Solid", "None", (0.6, 0.6, 0.6)),
            ("chosen views", "Chosen angle (deg)", "None", "Circle", (0.85, 0.1, 0.1))):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {label}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("Frame")
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetLineStyle(getattr(series, f"LineStyle{line}"))
        series.SetMarkerStyle(getattr(series, f"MarkerStyle{marker}"))
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table, chart


# -- display of results --------------------------------------------------------------------------
def add_vessel_rendering(volume_node: Any, threshold: float, logic: Any) -> Any:
    """Volume rendering that shows vessels: transparent below ``threshold``, opaque red→white above.

    ``threshold``: the value separating vessel from background (e.g. the segmentation threshold
    recorded in the manifest). ``logic``: the volume-rendering module logic (in Slicer
    ``slicer.modules.volumerendering.logic()``), which creates the display node of the rendering
    method the user configured.
    """
    scene = volume_node.GetScene()
    lo, hi = volume_node.GetImageData().GetScalarRange()
    t = float(threshold)
    top = max(hi, t * 1.0001 + 1e-12)
    display = logic.CreateDefaultVolumeRenderingNodes(volume_node)
    prop = display.GetVolumePropertyNode()
    if prop is None:
        prop = scene.AddNewNodeByClass("vtkMRMLVolumePropertyNode", f"{volume_node.GetName()} vessels")
        display.SetAndObserveVolumePropertyNodeID(prop.GetID())
    prop.SetName(f"{volume_node.GetName()} vessels")
    vp = prop.GetVolumeProperty()
    opacity = vtk.vtkPiecewiseFunction()
    opacity.AddPoint(min(lo, t - 1e-6), 0.0)
    opacity.AddPoint(t, 0.0)
    opacity.AddPoint(t + 0.25 * (top - t), 0.6)
    opacity.AddPoint(top, 0.9)
    colors = vtk.vtkColorTransferFunction()
    colors.AddRGBPoint(t, 0.55, 0.05, 0.05)
    colors.AddRGBPoint(t + 0.5 * (top - t), 0.95, 0.35, 0.25)
    colors.AddRGBPoint(top, 1.0, 0.95, 0.9)
    vp.SetScalarOpacity(opacity)
    vp.SetColor(colors)
    vp.ShadeOn()
    vp.SetInterpolationTypeToLinear()
    display.SetVisibility(True)
    return display


def show_time_to_peak(volume_node: Any, vessel_threshold_value: float | None = None,
                      color_node_id: str = "vtkMRMLColorTableNodeRainbow") -> Any:
    """Colour a time-to-peak volume: rainbow over the range of arrival times, background hidden.

    Voxels at or below ``vessel_threshold_value`` (e.g. 0 s outside vessels) are thresholded away
    so the map shows on top of the anatomy as an overlay.
    """
    display = volume_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node_id)
    lo, hi = volume_node.GetImageData().GetScalarRange()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi if hi > lo else lo + 1.0)
    if vessel_threshold_value is not None:
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(float(vessel_threshold_value) + 1e-6)
        display.SetUpperThreshold(hi)
    return display


def show_side_by_side(scene: Any, left: Any, right: Any) -> Any:
    """Side-by-side layout with ``left`` in the red and ``right`` in the yellow slice view.

    Used for rendered vs measured projections and result vs reference. Returns the layout node
    (the application's layout manager follows its view arrangement).
    """
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None:
        layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    wanted = {"Red": left, "Yellow": right}
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        node = wanted.get(composite.GetLayoutName())
        if node is not None:
            composite.SetBackgroundVolumeID(node.GetID())
    return layout


def rendering_threshold(manifest: Mapping[str, Any], volume_node: Any) -> float:
    """Vessel/background level for volume rendering: the run's segmentation threshold, if recorded
    in the manifest (``segmentation.threshold_low`` or ``.threshold``), else half the maximum."""
    info = manifest.get("segmentation") or {}
    for key in ("threshold_low", "threshold"):
        if isinstance(info.get(key), (int, float)):
            return float(info[key])
    return 0.5 * float(volume_node.GetImageData().GetScalarRange()[1])


def present_results(scene: Any, loaded: LoadedOutputs, volume_rendering_logic: Any) -> dict[str, Any]:
    """Display a reconstruction's results the way a reader wants them, and say what was done.

    The vessel volume gets the vessel volume-rendering preset, the time-to-peak map its colour
    table with the background thresholded away, and rendered vs measured projection sequences
    go side by side (measured left). Returns ``{"rendering": display, "time_to_peak": display,
    "layout": layout}`` for the parts that applied.
    """
    shown: dict[str, Any] = {}
    volume = loaded.first("volume")
    if volume is not None and volume.IsA("vtkMRMLScalarVolumeNode"):
        shown["rendering"] = add_vessel_rendering(volume, rendering_threshold(loaded.manifest, volume),
                                                  volume_rendering_logic)
    ttp = loaded.first("time_to_peak")
    if ttp is not None:
        shown["time_to_peak"] = show_time_to_peak(ttp, float(ttp.GetImageData().GetScalarRange()[0]))
    sequences = {node.GetName(): node for node in loaded.nodes.get("renderings", [])
                 if node.IsA("vtkMRMLSequenceBrowserNode")}
    measured, rendered = sequences.get("measured browser"), sequences.get("rendered browser")
    if measured is not None and rendered is not None:
        proxies = [b.GetProxyNode(b.GetMasterSequenceNode()) for b in (measured, rendered)]
        if all(p is not None for p in proxies):
            shown["layout"] = show_side_by_side(scene, *proxies)
    return shown
