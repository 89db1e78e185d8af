"""The modules' Logic and Test classes, run outside Slicer against the real engine worker.

slicer-core has the MRML side but not the application layer the module files import (``qt``,
``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.i18n``, ``slicer.app``).
Minimal stand-ins for exactly those are installed here, so the code that runs inside Slicer
— job building, background run with QTimer polling, cancel, loading the manifest — runs for real.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import types
import typing
import unittest
from unittest import mock
from pathlib import Path

import pytest

from module_paths import MODULES

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
pytestmark = pytest.mark.mrml
pytest_plugins = ["slicer_fixtures"]  # mrml_scene, new_mrml_scene


class _Signal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)


class _QTimer:
    """Stand-in for ``qt.QTimer``: the test drives ``timeout`` itself via :func:`_pump_until_idle`."""

    def __init__(self):
        self.timeout = _Signal()
        self.active = False

    def setInterval(self, ms):
        self.interval = ms

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


def _parameter_node_wrapper(cls):
    """Stand-in for ``@parameterNodeWrapper``: plain attributes with the declared defaults, one
    wrapper per parameter node so values persist like in Slicer."""
    hints = typing.get_type_hints(cls, include_extras=True)
    wrappers = {}

    def __new__(wrapper_cls, node):
        if node.GetID() not in wrappers:
            wrappers[node.GetID()] = object.__new__(wrapper_cls)
            wrappers[node.GetID()]._fresh = True
        return wrappers[node.GetID()]

    def __init__(self, node):
        if not self.__dict__.pop("_fresh", False):
            return
        self.parameterNode = node
        for name, hint in hints.items():
            base = typing.get_origin(hint) is typing.Annotated and typing.get_args(hint)[0] or hint
            default = getattr(cls, name, None)
            setattr(self, name, default if default is not None else (Path() if base is Path else None))

    return type(cls.__name__, (), {"__new__": __new__, "__init__": __init__, "__annotations__": cls.__annotations__})


class _Logic:
    def __init__(self):
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        """The module's singleton parameter node (created on first use), as in Slicer."""
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetName(self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node


class _Test(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        pass


@pytest.fixture
def modules(monkeypatch, tmp_path, mrml_scene, sample_cache):
    """The three module files imported with the application layer stubbed; Slicer's temp folder in
    tmp_path, its cache folder shared by the session (sample cases are simulated once)."""
    stub = types.ModuleType
    qt = stub("qt")
    qt.QTimer = _QTimer
    slm = stub("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {"__init__": lambda self, parent: None})
    slm.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    slm.ScriptedLoadableModuleLogic = _Logic
    slm.ScriptedLoadableModuleTest = _Test
    pnw = stub("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = _parameter_node_wrapper
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    i18n = stub("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    for name, module in (("qt", qt), ("slicer.ScriptedLoadableModule", slm),
                         ("slicer.parameterNodeWrapper", pnw), ("slicer.i18n", i18n)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(
        temporaryPath=str(tmp_path / "slicer-tmp"), cachePath=str(sample_cache), layoutManager=mock.MagicMock()),
        raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(volumerendering=types.SimpleNamespace(
        logic=lambda: mrml_scene.logic("VolumeRendering"))), raising=False)
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: dict(os.environ))
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kwargs: None)
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda *args: None)
    monkeypatch.setattr(slicer.util, "getModuleLogic", lambda name: getattr(loaded[name], f"{name}Logic")())
    loaded = {}
    for name in MODULES:
        sys.modules.pop(name, None)
        loaded[name] = importlib.import_module(name)
    yield loaded
    for name in MODULES:
        sys.modules.pop(name, None)


def _pump_until_idle(logic, timeout=120.0):
    deadline = time.monotonic() + timeout
    while logic._timer.active:
        assert time.monotonic() < deadline, "run did not finish"
        for slot in logic._timer.timeout.slots:
            slot()
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_module_self_tests_pass(modules, module):
    """Each module's ScriptedLoadableModuleTest (what ctest runs inside Slicer) passes here too."""
    test = getattr(modules[module], f"{module}Test")()
    test.runTest()


def test_background_run_reports_progress_and_finishes(modules, mrml_scene, tmp_path):
    m = modules["DSAReconstruction"]
    logic = m.DSAReconstructionLogic()
    events, finished = [], []
    logic.onEvent = events.append
    logic.onFinished = lambda process, loaded: finished.append((process.state, loaded))
    before = mrml_scene.scene.GetNumberOfNodes()
    logic.startTask("selftest", {"steps": 3, "step_seconds": 0.01}, tmp_path / "run", device="cpu", rolesToLoad=[])
    assert logic.isRunning()
    with pytest.raises(RuntimeError, match="Another run"):
        logic.startTask("selftest", {}, tmp_path / "run2")
    _pump_until_idle(logic)
    assert [state for state, _ in finished] == [m.State.FINISHED]
    assert finished[0][1].manifest["task"] == "selftest"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert mrml_scene.scene.GetNumberOfNodes() == before
    assert not logic.isRunning()


def test_cancel_leaves_scene_unchanged_and_no_outputs(modules, mrml_scene, tmp_path):
    import psutil

    m = modules["DSAReconstruction"]
    logic = m.DSAReconstructionLogic()
    finished = []
    logic.onFinished = lambda process, loaded: finished.append((process.state, loaded))
    before = mrml_scene.scene.GetNumberOfNodes()
    process = logic.startTask("selftest", {"steps": 50, "step_seconds": 0.2}, tmp_path / "run", device="cpu")
    while process.fraction < 0.04:
        for slot in logic._timer.timeout.slots:
            slot()
        time.sleep(0.05)
    worker = psutil.Process(process.pid)
    logic.cancel()
    _pump_until_idle(logic)
    assert finished == [(m.State.CANCELLED, None)]
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert mrml_scene.scene.GetNumberOfNodes() == before
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))


def test_results_are_loaded_by_role(modules, mrml_scene, tmp_path):
    """``loadResults`` puts the manifest's outputs into the scene, limited to the chosen roles."""
    import json

    import numpy as np

    from angiorecon.formats.volume import write_volume
    from angiorecon.geometry import VolumeGrid

    grid = VolumeGrid((4, 5, 6), np.diag([0.5, 0.5, 1.0, 1.0]))
    write_volume(tmp_path / "volume.nrrd", np.ones(grid.shape, np.float32), grid)
    write_volume(tmp_path / "mask.nrrd", np.ones(grid.shape, np.uint8), grid)
    (tmp_path / "manifest.json").write_text(json.dumps({"task": "reconstruct", "outputs": [
        {"role": "volume", "path": "volume.nrrd"}, {"role": "vessel_mask", "path": "mask.nrrd"}]}))
    calls = []
    logic = modules["DSAReconstruction"].DSAReconstructionLogic()
    logic.showResults = calls.append
    loaded = logic.loadResults(tmp_path / "manifest.json", roles=["vessel_mask"])
    assert list(loaded.nodes) == ["vessel_mask"] and calls == [loaded]
    assert loaded.first("vessel_mask").IsA("vtkMRMLSegmentationNode")
