"""A complete MRML scene without the Slicer application (slicer-core), for tests and scripts.

A bare ``vtkMRMLScene`` cannot create sequence browsers, read/write ``.mrk.json`` or convert
segmentations, and cannot read ``.mrb`` files: those need the module logics and a data-IO
manager with a cache folder attached (``slicer_ecosystem.md`` §4.4). This is that recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: module name → slicer-core logic class name, registered on the application logic.
MODULE_LOGICS = {
    "Markups": "vtkSlicerMarkupsLogic",
    "Sequences": "vtkSlicerSequencesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Models": "vtkSlicerModelsLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "VolumeRendering": "vtkSlicerVolumeRenderingLogic",
}


@dataclass
class HeadlessScene:
    """The scene plus every object that must stay alive as long as the scene is used."""

    scene: Any
    app_logic: Any
    logics: dict[str, Any] = field(default_factory=dict)
    io_logics: list[Any] = field(default_factory=list)

    def logic(self, module: str) -> Any:
        return self.logics[module]

    def close(self) -> None:
        self.scene.Clear(True)


def create_headless_scene(cache_dir: str | Path) -> HeadlessScene:
    """Scene with application logic, default colours, module logics and ``.mrb``-capable IO.

    Also sets ``slicer.mrmlScene`` so that ``slicer.util`` helpers that only use the scene work.
    """
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtkCollection())
    app.SetViewLogics(vtkCollection())
    headless = HeadlessScene(scene=scene, app_logic=app)
    for module, class_name in MODULE_LOGICS.items():
        logic = getattr(slicer, class_name)()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(module, logic)
        headless.logics[module] = logic

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    remote_io.SetMRMLApplicationLogic(app)
    remote_io.GetCacheManager().SetRemoteCacheDirectory(str(cache))
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLScene(scene)
    data_io.SetMRMLApplicationLogic(app)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.AddDataIOToScene()
    headless.io_logics = [remote_io, data_io]
    slicer.mrmlScene = scene
    return headless
