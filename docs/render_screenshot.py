"""Render a screenshot-like picture of a reconstruction for the README, offscreen with VTK (EGL/OSMesa).

Shows what the DSAReconstruction module puts into Slicer's 3D view: the vessel surface (semi-
transparent), the centerline tree coloured by radius, and a maximum-intensity projection of the
reconstructed volume on the back wall. Input: a ``reconstruct`` output folder (``volume.nii.gz``,
``vessels.vtp``, ``centerlines.vtp``), e.g. ``demo_output/kinetic`` from ``python3 dev.py demo``::

    .venv/bin/python docs/render_screenshot.py demo_output/kinetic docs/images/screenshot.png

Everything is drawn in the engine's world frame (LPS mm), seen from the front (anterior), head up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from angiorecon.formats.volume import read_volume  # noqa: E402


def _read_polydata(path: Path) -> vtk.vtkPolyData:
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    if reader.GetOutput().GetNumberOfPoints() == 0:
        raise SystemExit(f"{path} has no points")
    return reader.GetOutput()


def mip_actor(volume: np.ndarray, affine: np.ndarray, behind_y: float) -> vtk.vtkImageActor:
    """Coronal MIP (max along y = posterior) as a grey picture on the plane y = ``behind_y``.

    Assumes an axis-aligned grid (the engine's default grids are).
    """
    mip = volume.max(axis=1)                                   # [z, x]
    top = float(np.percentile(mip, 99.5)) or 1.0
    grey = (np.clip(mip / top, 0.0, 1.0) * 255).astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(grey.shape[1], grey.shape[0], 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(grey.ravel(), deep=True))
    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputData(image)
    m = vtk.vtkMatrix4x4()
    sx, sz = float(affine[0, 0]), float(affine[2, 2])
    for r, c, v in ((0, 0, sx), (1, 2, 1.0), (2, 1, sz), (0, 3, affine[0, 3]), (1, 3, behind_y),
                    (2, 3, affine[2, 3]), (1, 1, 0.0), (2, 2, 0.0)):
        m.SetElement(r, c, float(v))
    actor.SetUserMatrix(m)
    actor.GetProperty().SetOpacity(0.9)
    return actor


def render(run: Path, out: Path, size: tuple[int, int] = (1200, 900)) -> Path:
    volume, grid = read_volume(run / "volume.nii.gz")
    affine = np.asarray(grid.affine, dtype=float)
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise SystemExit("the volume grid is not axis aligned; this script draws axis-aligned MIPs only")
    mesh = _read_polydata(run / "vessels.vtp")
    lines = _read_polydata(run / "centerlines.vtp")

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.08, 0.09, 0.12)
    renderer.SetBackground2(0.25, 0.27, 0.33)
    renderer.GradientBackgroundOn()

    bounds = mesh.GetBounds()
    renderer.AddActor(mip_actor(np.asarray(volume, dtype=np.float32), affine, bounds[3] + 20.0))

    mesh_mapper = vtk.vtkPolyDataMapper()
    mesh_mapper.SetInputData(mesh)
    mesh_mapper.ScalarVisibilityOff()
    mesh_actor = vtk.vtkActor()
    mesh_actor.SetMapper(mesh_mapper)
    mesh_actor.GetProperty().SetColor(0.85, 0.25, 0.2)
    mesh_actor.GetProperty().SetOpacity(0.35)
    renderer.AddActor(mesh_actor)

    radius = lines.GetPointData().GetArray("Radius")
    lines.GetPointData().SetActiveScalars("Radius")
    tubes = vtk.vtkTubeFilter()
    tubes.SetInputData(lines)
    tubes.SetRadius(0.6)
    tubes.SetNumberOfSides(10)
    tubes.CappingOn()
    tubes.SetVaryRadiusToVaryRadiusOff()
    line_mapper = vtk.vtkPolyDataMapper()
    line_mapper.SetInputConnection(tubes.GetOutputPort())
    lut = vtk.vtkLookupTable()
    lut.SetHueRange(0.66, 0.0)
    lut.Build()
    line_mapper.SetLookupTable(lut)
    line_mapper.SetScalarModeToUsePointData()
    line_mapper.SelectColorArray("Radius")
    lo, hi = radius.GetRange() if radius is not None else (0.0, 1.0)
    line_mapper.SetScalarRange(lo, hi)
    line_actor = vtk.vtkActor()
    line_actor.SetMapper(line_mapper)
    renderer.AddActor(line_actor)

    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(lut)
    bar.SetTitle("radius (mm)")
    bar.SetNumberOfLabels(4)
    bar.SetWidth(0.08)
    bar.SetHeight(0.4)
    renderer.AddViewProp(bar)
    label = vtk.vtkTextActor()
    label.SetInput(f"{run.name}: vessel surface, centerlines by radius, MIP of the reconstruction")
    label.GetTextProperty().SetFontSize(20)
    label.SetPosition(15, 15)
    renderer.AddViewProp(label)

    camera = renderer.GetActiveCamera()
    cx, cy, cz = (bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2
    camera.SetFocalPoint(cx, cy, cz)
    camera.SetPosition(cx, cy - 1000.0, cz)                   # anterior (−y in LPS), looking back
    camera.SetViewUp(0.0, 0.0, 1.0)                           # superior up
    camera.ParallelProjectionOn()                             # the MIP wall lines up with the vessels
    renderer.ResetCamera(bounds)
    camera.Zoom(1.2)

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(out))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?", default=REPO / "demo_output" / "kinetic",
                   help="reconstruct output folder (default: demo_output/kinetic)")
    p.add_argument("out", type=Path, nargs="?", default=REPO / "docs" / "images" / "screenshot.png")
    a = p.parse_args(argv)
    print(render(a.run, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
