"""3D Slicer markups curves (``.mrk.json``) for vessel centerlines with a per-point ``Radius``.

One ``Curve`` markup per branch, control points in **LPS** world mm (the engine's world frame, as
slicer-core writes them), and the radius as a ``Radius`` measurement with ``controlPointValues``
— the layout SlicerVMTK's *Extract Centerline* produces, so VMTK's cross-section/stenosis tools
and Slicer's curve interpolation (``arrayFromMarkupsCurveData(curve, "Radius", world=True)``)
accept our centerlines. Further per-point values (e.g. the coronary task's ``EpipolarAngle``) are
written the same way, as measurements with ``controlPointValues``. Schema: ``slicer_ecosystem.md``
§3.7 (readers must not pin the schema URL).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadInput

SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
          "Resources/Schema/markups-schema-v1.0.3.json#")
_IDENTITY_LPS = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]


def _curve_markup(points: np.ndarray, values: Mapping[str, tuple[str, np.ndarray]], name: str,
                  color: Sequence[float] | None, attributes: dict[str, Any] | None) -> dict[str, Any]:
    cps = [{
        "id": str(i + 1), "label": f"{name}-{i + 1}", "description": "", "associatedNodeID": "",
        "position": [float(c) for c in p], "orientation": _IDENTITY_LPS, "selected": True,
        "locked": True, "visibility": False, "positionStatus": "defined",
    } for i, p in enumerate(points)]
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1).sum() if len(points) > 1 else 0.0
    measurements: list[dict[str, Any]] = [
        {"name": "length", "enabled": True, "value": float(seg), "units": "mm", "printFormat": "%-#4.4g%s"},
    ]
    for key, (units, vals) in values.items():
        measurements.append({"name": key, "enabled": True, "units": units, "printFormat": "%5.3f %s",
                             "controlPointValues": [float(v) for v in vals]})
    markup: dict[str, Any] = {
        "type": "Curve", "name": name, "coordinateSystem": "LPS", "coordinateUnits": "mm",
        "locked": True, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(cps), "controlPoints": cps, "measurements": measurements,
        "display": {"visibility": True, "opacity": 1.0, "pointLabelsVisibility": False,
                    "propertiesLabelVisibility": False, "lineThickness": 0.5, "glyphScale": 1.0},
    }
    if color is not None:
        markup["display"]["color"] = [float(c) for c in color]
        markup["display"]["selectedColor"] = [float(c) for c in color]
    if attributes:
        markup["attributes"] = {str(k): str(v) for k, v in attributes.items()}
    return markup


def write_markups_curves(path: str | Path, curves: Sequence[np.ndarray],
                         radii: Sequence[np.ndarray] | None = None, names: Sequence[str] | None = None,
                         coordinate_system: str = "LPS", colors: Sequence[Sequence[float]] | None = None,
                         attributes: Sequence[dict[str, Any]] | None = None,
                         point_values: Mapping[str, tuple[str, Sequence[np.ndarray]]] | None = None) -> Path:
    """Write one ``Curve`` markup per (M_i, 3) world-mm array to a ``.mrk.json`` (atomically).

    ``radii``: one (M_i,) array per curve → ``Radius`` measurement (mm) with ``controlPointValues``.
    ``point_values``: further per-point measurements, name → (units, one (M_i,) array per curve).
    ``coordinate_system``: the frame the given points are in; ``"LPS"`` (engine world, default) is
    written as is, ``"RAS"`` points are converted to LPS so the file is always LPS.
    ``attributes``: optional per-curve string attributes (e.g. ``{"CellId": 3, "GroupId": 3}``),
    stored as a plain JSON object that Slicer ignores but :func:`read_markups_curves` returns.
    """
    path = Path(path)
    if not path.name.lower().endswith(".json"):
        raise BadInput(f"markups file {path.name!r} must end with .mrk.json")
    cs = coordinate_system.upper()
    if cs not in ("LPS", "RAS"):
        raise BadInput(f"coordinate_system must be LPS or RAS, got {coordinate_system!r}")
    n = len(curves)
    per_point: dict[str, tuple[str, Sequence[np.ndarray]]] = {}
    if radii is not None:
        per_point["Radius"] = ("mm", radii)
    for key, (units, arrays) in (point_values or {}).items():
        if key in per_point:
            raise ValueError(f"point value {key!r} given twice")
        per_point[key] = (units, arrays)
    for what, seq in (("names", names), ("colors", colors), ("attributes", attributes),
                      *(("radii" if key == "Radius" else key, arrays) for key, (_units, arrays) in per_point.items())):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries for {n} curves")
    markups = []
    for i, pts in enumerate(curves):
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        if cs == "RAS":
            p = p * np.array([-1.0, -1.0, 1.0])
        values = {}
        for key, (units, arrays) in per_point.items():
            v = np.asarray(arrays[i], dtype=np.float64).reshape(-1)
            if len(v) != len(p):
                what = "radii" if key == "Radius" else f"{key} values"
                raise ValueError(f"curve {i}: {len(v)} {what} for {len(p)} points")
            values[key] = (units, v)
        name = names[i] if names is not None else f"Centerline ({i})"
        markups.append(_curve_markup(p, values, name, colors[i] if colors is not None else None,
                                     attributes[i] if attributes is not None else None))
    doc = {"@schema": SCHEMA, "markups": markups}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def read_markups_curves(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray | None], list[str]]:
    """Read every Curve/ClosedCurve markup → (points (M, 3) in LPS mm, Radius values or None, names).

    Accepts files written by Slicer (LPS or RAS ``coordinateSystem``, any schema version).
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"markups file {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"markups file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("markups"), list):
        raise BadInput(f"markups file {path} has no 'markups' list")
    curves, radii, names = [], [], []
    for k, m in enumerate(doc["markups"]):
        if m.get("type") not in ("Curve", "ClosedCurve"):
            continue
        pts = np.array([cp["position"] for cp in m.get("controlPoints", []) if "position" in cp],
                       dtype=np.float64).reshape(-1, 3)
        cs = str(m.get("coordinateSystem", "LPS")).upper()
        if cs == "RAS":
            pts = pts * np.array([-1.0, -1.0, 1.0])
        elif cs != "LPS":
            raise BadInput(f"markups file {path}: curve {k} has unknown coordinateSystem {cs!r}")
        r = None
        for meas in m.get("measurements", []):
            if meas.get("name") == "Radius" and "controlPointValues" in meas:
                r = np.asarray(meas["controlPointValues"], dtype=np.float64)
        curves.append(pts)
        radii.append(r)
        names.append(str(m.get("name", f"Curve {k}")))
    return curves, radii, names
