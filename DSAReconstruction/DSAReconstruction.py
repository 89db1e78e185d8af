"""DSAReconstruction: 3D vessels (and their contrast filling over time) from a rotational DSA run.

Thin Slicer layer over the ``angiorecon`` engine: the panel fills a parameter node, the logic writes
the job, runs ``python -m angiorecon reconstruct --job job.json --out DIR`` in the background,
shows its progress, can cancel it, and loads the results into the scene. The background-run
machinery here (:class:`EngineTaskLogic`, :class:`EngineModuleWidget`) is shared by the
SyntheticDSA and CoronaryTwoView modules, which depend on this one.
"""

import datetime
import logging
from pathlib import Path
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLModelNode, vtkMRMLScalarVolumeNode, vtkMRMLSequenceNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DSAReconstructionLib import environment, jobs, mrml_io
from DSAReconstructionLib.process import BackgroundProcess, State

CATEGORY = "Angiography"
CONTRIBUTORS = ["SlicerAngioRecon developers"]


#
# DSAReconstruction
#


class DSAReconstruction(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DSA Reconstruction")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", CATEGORY)]
        self.parent.dependencies = []
        self.parent.contributors = CONTRIBUTORS
        self.parent.helpText = _(
            "Reconstruct the 3D vessels of a rotational digital subtraction angiography (DSA) run from a few"
            " views: load DICOM XA fill/mask runs, a VPAL/4DRGS dataset folder, or frames already in the scene;"
            " choose how many views to use and the method; the vessel volume, segmentation, surface, centerlines"
            " with radius and the 4D contrast filling appear in the scene. Runs in the background and can be"
            " cancelled. The computation engine (angiorecon) also runs from the command line.")
        self.parent.acknowledgementText = _(
            "Methods follow VPAL and 4DRGS (sparse-view dynamic DSA reconstruction). The background-process"
            " pattern follows SlicerMONAIAuto3DSeg.")


#
# Parameter node
#


@parameterNodeWrapper
class DSAReconstructionParameterNode:
    inputType: Annotated[str, Choice(["dicom", "dataset", "sequence"])] = "dicom"
    inputPath: Path
    inputSequence: vtkMRMLSequenceNode
    viewSelection: Annotated[str, Choice(["uniform", "explicit"])] = "uniform"
    numberOfViews: Annotated[int, WithinRange(2, 2000)] = 30
    viewIndices: str = ""
    method: Annotated[str, Choice(list(jobs.RECONSTRUCTION_METHODS))] = "kinetic"
    preset: Annotated[str, Choice(list(jobs.PRESETS))] = "fast"
    device: Annotated[str, Choice(list(jobs.DEVICES))] = "auto"
    referenceVolume: vtkMRMLScalarVolumeNode
    referenceModel: vtkMRMLModelNode
    outputFolder: Path
    loadVolume: bool = True
    loadSegmentation: bool = True
    loadMesh: bool = True
    loadCenterlines: bool = True
    loadSequences: bool = True
    loadMetrics: bool = True


pathIsSet = jobs.path_is_set            # the modules' name for it


#
# Shared background-run logic and widget behaviour
#


class EngineTaskLogic(ScriptedLoadableModuleLogic):
    """Runs one engine task at a time in the background and loads its manifest into the scene.

    A ``qt.QTimer`` drains the :class:`BackgroundProcess` event queue on the GUI thread, so Slicer
    stays responsive; ``onEvent(event)`` and ``onFinished(process, loaded)`` let the widget follow.
    Usable without the widget (``runTask`` blocks until the result is loaded).
    """

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.process: Optional[BackgroundProcess] = None
        self.rolesToLoad: Optional[list] = None
        self.onEvent: Optional[Callable[[dict], None]] = None
        self.onFinished: Optional[Callable[[BackgroundProcess, Optional[mrml_io.LoadedOutputs]], None]] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._pump)

    # -- running ---------------------------------------------------------------------------------
    @staticmethod
    def newOutputFolder(task: str, parent: Optional[Path] = None) -> Path:
        """A fresh run folder ``<parent>/<task>-<timestamp>`` (parent: Slicer's temporary folder)."""
        root = Path(parent) if pathIsSet(parent) else Path(slicer.app.temporaryPath) / "AngioRecon"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        return root / f"{task}-{stamp}"

    @staticmethod
    def ensureDependencies(requirementsFile: Path) -> None:
        """Install what the engine needs into Slicer's Python, after asking (called on Apply only).

        PyTorch comes from the PyTorch extension (``PyTorchUtils`` picks the CUDA build matching the
        driver); everything else from the module's ``requirements.txt`` through
        ``slicer.packaging.pip_ensure`` (Slicer >= 5.12), else ``slicer.util.pip_install`` after a
        confirmation. Raises ``RuntimeError`` if the user declines.
        """
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(_("The engine needs PyTorch: install the PyTorch extension from the Extensions"
                                 " Manager and restart Slicer.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=">=2.1") is None:
                raise RuntimeError(_("PyTorch is required: install it with the PyTorch extension."))
        missing = environment.missing_requirements(environment.read_requirements(requirementsFile))
        if not missing:
            return
        try:
            import slicer.packaging
        except ImportError:
            if not slicer.util.confirmOkCancelDisplay(
                    _("The reconstruction engine needs these Python packages, which will now be installed:"),
                    _("Install Python packages"), detailedText="\n".join(missing)):
                raise RuntimeError(_("The run needs these Python packages: {packages}").format(
                    packages=", ".join(missing))) from None
            slicer.util.pip_install(missing)
            return
        slicer.packaging.pip_ensure(missing, requester=_("SlicerAngioRecon"), skip_packages=list(
            environment.PROVIDED_ELSEWHERE))

    def isRunning(self) -> bool:
        return self.process is not None and self.process.running

    def startTask(self, task: str, job: dict, runFolder: Path, device: str = "auto",
                  rolesToLoad: Optional[list] = None) -> BackgroundProcess:
        """Launch ``task`` writing into ``runFolder`` (must not exist yet); results load when it ends."""
        if self.isRunning():
            raise RuntimeError(_("Another run is still going; cancel it or wait for it to finish."))
        self.rolesToLoad = rolesToLoad
        self.process = BackgroundProcess(task, job, runFolder, device=device, env=slicer.util.startupEnvironment())
        logging.info("Starting: %s", " ".join(self.process.command))
        self.process.start()
        self._timer.start()
        return self.process

    def cancel(self) -> None:
        if self.isRunning():
            self.process.cancel()

    def runTask(self, task: str, job: dict, runFolder: Optional[Path] = None, device: str = "auto",
                rolesToLoad: Optional[list] = None, timeout: float = 600.0) -> mrml_io.LoadedOutputs:
        """Run ``task`` to the end (scripts, tests) and return what was loaded; raises on failure."""
        process = BackgroundProcess(task, job, runFolder or self.newOutputFolder(task), device=device,
                                    env=slicer.util.startupEnvironment())
        process.start()
        process.wait(timeout)
        if process.running:
            process.cancel()
            process.wait(timeout)
            raise RuntimeError(f"{task} did not finish within {timeout:.0f} s and was cancelled")
        if process.state is not State.FINISHED:
            raise RuntimeError(f"{task} failed ({process.error_kind}): {process.message}")
        return self.loadResults(process.manifest, rolesToLoad)

    def loadResults(self, manifestPath: Path, roles: Optional[list] = None) -> mrml_io.LoadedOutputs:
        """Load a finished run's outputs into the scene (and show them)."""
        loaded = mrml_io.load_manifest(slicer.mrmlScene, manifestPath, roles)
        self.showResults(loaded)
        return loaded

    def showResults(self, loaded: mrml_io.LoadedOutputs) -> None:
        """Make the main result visible: the first volume in the slice views, models in 3D."""
        volume = loaded.first("volume")
        if volume is not None:
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
        if loaded.first("mesh") is not None or loaded.first("centerlines") is not None:
            slicer.app.layoutManager().threeDWidget(0).threeDView().resetFocalPoint()

    def _pump(self) -> None:
        process = self.process
        if process is None:
            self._timer.stop()
            return
        for event in process.poll():
            if self.onEvent:
                self.onEvent(event)
        if not process.state.done:
            return
        self._timer.stop()
        loaded = None
        if process.state is State.FINISHED:
            try:
                loaded = self.loadResults(process.manifest, self.rolesToLoad)
            except Exception as exc:  # loading is the last step of the run: report it like a run error
                logging.exception("Loading the results failed")
                process.state = State.FAILED
                process.message = _("Loading the results into the scene failed: {error}").format(error=exc)
        if self.onFinished:
            self.onFinished(process, loaded)


class EngineModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel behaviour shared by the three modules: ``.ui`` loading, parameter-node binding, and the
    run area (Apply that turns into Cancel, Test engine, progress bar, stage text, collapsible log).

    The ``.ui`` must contain ``applyButton``, ``testEngineButton``, ``progressBar`` (range 0–1000),
    ``stageLabel``, ``logCollapsibleButton`` and ``logTextEdit``. Subclasses implement
    ``createLogic()``, ``canApply()``, ``startRun()`` and optionally ``updateGuiFromParameterNode()``.
    """

    applyText = _("Apply")

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    # -- set-up and parameter node ----------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = self.createLogic()
        self.logic.onEvent = self.onEngineEvent
        self.logic.onFinished = self.onEngineFinished
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.testEngineButton.connect("clicked(bool)", self.onTestEngineButton)
        self.ui.deviceInfoLabel.text = environment.device_description(environment.gpu_names())
        self.ui.deviceComboBox.toolTip = self.ui.deviceComboBox.toolTip + " - " + self.ui.deviceInfoLabel.text

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is not None:
            self.updateGuiFromParameterNode(self._parameterNode)
        self.updateRunButtons()

    def updateGuiFromParameterNode(self, parameterNode) -> None:
        """Enable/disable controls that depend on other choices (nothing by default)."""

    # -- run area ---------------------------------------------------------------------------------
    def updateRunButtons(self) -> None:
        running = self.logic.isRunning()
        self.ui.testEngineButton.enabled = not running
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the run; nothing is added to the scene")
            self.ui.applyButton.enabled = self.logic.process.state is State.RUNNING
        else:
            self.ui.applyButton.text = self.applyText
            self.ui.applyButton.toolTip = _("Run in the background")
            self.ui.applyButton.enabled = self._parameterNode is not None and self.canApply()

    def onApplyButton(self) -> None:
        if self.logic.isRunning():
            self.logic.cancel()
            self.ui.stageLabel.text = _("Cancelling...")
            self.updateRunButtons()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the run."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self.logic.ensureDependencies(Path(self.resourcePath("requirements.txt")))
            self.startRun()
        self.updateRunButtons()

    def onTestEngineButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the engine."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.logic.startTask("selftest", jobs.selftest_job(), self.logic.newOutputFolder("selftest"),
                                 device="cpu", rolesToLoad=[])
        self.updateRunButtons()

    def onEngineEvent(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.ui.progressBar.value = int(1000 * float(event.get("fraction", 0.0)))
            stage, message = event.get("stage", ""), event.get("message", "")
            self.ui.stageLabel.text = f"{stage}: {message}" if message else stage
        elif kind == "log":
            prefix = "WARNING: " if event.get("level") == "warning" else ""
            self.ui.logTextEdit.appendPlainText(prefix + event.get("message", ""))
        elif kind == "error":
            self.ui.logTextEdit.appendPlainText(f"ERROR ({event.get('kind', 'internal')}): {event.get('message', '')}")

    def onEngineFinished(self, process: BackgroundProcess, loaded: Optional[mrml_io.LoadedOutputs]) -> None:
        if process.state is State.FINISHED:
            self.ui.progressBar.value = 1000
            count = sum(len(nodes) for nodes in loaded.nodes.values()) if loaded else 0
            self.ui.stageLabel.text = _("Done: {count} items added to the scene ({folder})").format(
                count=count, folder=process.out_dir)
        elif process.state is State.CANCELLED:
            self.ui.progressBar.value = 0
            self.ui.stageLabel.text = _("Cancelled")
        else:
            self.ui.stageLabel.text = _("Failed: {message}").format(message=process.message)
            self.ui.logCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(_("The run failed:\n{message}").format(message=process.message))
        self.updateRunButtons()


#
# DSAReconstructionWidget
#


class DSAReconstructionWidget(EngineModuleWidget):
    def createLogic(self) -> "DSAReconstructionLogic":
        return DSAReconstructionLogic()

    def setup(self) -> None:
        EngineModuleWidget.setup(self)
        self.ui.coverageButton.connect("clicked(bool)", self.onCoverageButton)

    def onCoverageButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not read the run's geometry."), waitCursor=True):
            self.logic.ensureDependencies(Path(self.resourcePath("requirements.txt")))
            self.logic.showCoverage(self._parameterNode)

    def updateGuiFromParameterNode(self, p: DSAReconstructionParameterNode) -> None:
        fromScene = p.inputType == "sequence"
        self.ui.inputPathLineEdit.enabled = not fromScene
        self.ui.inputSequenceSelector.enabled = fromScene
        self.ui.numberOfViewsSpinBox.enabled = p.viewSelection == "uniform"
        self.ui.viewIndicesLineEdit.enabled = p.viewSelection == "explicit"
        self.ui.coverageButton.enabled = self.canApply()

    def canApply(self) -> bool:
        p = self._parameterNode
        hasInput = p.inputSequence is not None if p.inputType == "sequence" else pathIsSet(p.inputPath)
        return hasInput and (p.viewSelection == "uniform" or bool(p.viewIndices.strip()))

    def startRun(self) -> None:
        self.logic.startReconstruction(self._parameterNode)


#
# DSAReconstructionLogic
#


class DSAReconstructionLogic(EngineTaskLogic):
    """Reconstruction runs: inputs from files or the scene, outputs into the scene."""

    def getParameterNode(self) -> DSAReconstructionParameterNode:
        return DSAReconstructionParameterNode(super().getParameterNode())

    def inputFiles(self, p: DSAReconstructionParameterNode) -> list:
        """The files or folder the engine reads the run from."""
        if p.inputType == "sequence":
            if p.inputSequence is None:
                raise ValueError(_("Select the sequence of frames to reconstruct from."))
            # the engine needs the C-arm geometry, which only the DICOM files the frames came from hold
            return mrml_io.source_dicom_files(slicer.mrmlScene, p.inputSequence, slicer.dicomDatabase)
        if not pathIsSet(p.inputPath):
            raise ValueError(_("Select a DICOM file or folder, or a dataset folder."))
        return [p.inputPath]

    @staticmethod
    def viewSpec(p: DSAReconstructionParameterNode):
        return p.numberOfViews if p.viewSelection == "uniform" else jobs.parse_view_list(p.viewIndices)

    def showCoverage(self, p: DSAReconstructionParameterNode):
        """Plot frames vs C-arm angle with the chosen views marked, in a plot layout."""
        from DSAReconstructionLib.coverage import run_coverage

        cov = run_coverage(self.inputFiles(p), self.viewSpec(p))
        _table, chart = mrml_io.add_coverage_plot(slicer.mrmlScene, cov.angles_deg, cov.chosen.tolist(),
                                                  _("Angle coverage"), times_s=cov.times_s)
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        return chart

    def reconstructionJob(self, p: DSAReconstructionParameterNode, workFolder: Path) -> dict:
        """Job for ``reconstruct``; scene references are saved into ``workFolder`` first."""
        workFolder.mkdir(parents=True, exist_ok=True)
        inputs = self.inputFiles(p)
        views = self.viewSpec(p)
        reference = None
        if p.referenceModel is not None:
            reference = mrml_io.save_model(slicer.mrmlScene, p.referenceModel, workFolder / "reference.vtp")
        elif p.referenceVolume is not None:
            reference = mrml_io.save_volume(slicer.mrmlScene, p.referenceVolume, workFolder / "reference.nrrd")
        return jobs.reconstruct_job(inputs, method=p.method, views=views, preset=p.preset, reference=reference)

    def rolesToLoadFor(self, p: DSAReconstructionParameterNode) -> list:
        return jobs.roles_to_load({"volume": p.loadVolume, "segmentation": p.loadSegmentation,
                                   "mesh": p.loadMesh, "centerlines": p.loadCenterlines,
                                   "sequences": p.loadSequences, "metrics": p.loadMetrics})

    def showResults(self, loaded: mrml_io.LoadedOutputs) -> None:
        """Vessel rendering preset, time-to-peak colours, measured vs rendered side by side."""
        EngineTaskLogic.showResults(self, loaded)
        if any(loaded.first(role) is not None for role in ("volume", "time_to_peak", "renderings")):
            mrml_io.present_results(slicer.mrmlScene, loaded, slicer.modules.volumerendering.logic())

    def startReconstruction(self, p: DSAReconstructionParameterNode) -> BackgroundProcess:
        runFolder = self.newOutputFolder("reconstruct", p.outputFolder)
        job = self.reconstructionJob(p, runFolder.with_name(runFolder.name + "-inputs"))
        return self.startTask("reconstruct", job, runFolder, device=p.device, rolesToLoad=self.rolesToLoadFor(p))


#
# DSAReconstructionTest
#


class DSAReconstructionTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``slicer_add_python_unittest``): the engine worker end to end, then a small
    reconstruction of the simulated rotational sample run (simulated on first use, about half a minute)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_EngineSelfTest()
        self.setUp()
        self.test_ViewList()
        self.setUp()
        self.test_ReconstructSampleRun()

    def test_EngineSelfTest(self):
        """Launch the engine's selftest through the logic and check its manifest."""
        self.delayDisplay("Running the engine self-test")
        logic = DSAReconstructionLogic()
        loaded = logic.runTask("selftest", jobs.selftest_job(steps=3, step_seconds=0.01), device="cpu",
                               timeout=300)
        manifest = loaded.manifest
        self.assertEqual(manifest["task"], "selftest")
        self.assertEqual(manifest["device"], "cpu")
        self.assertEqual(manifest["job"]["steps"], 3)
        self.assertEqual([o["role"] for o in manifest["outputs"]], ["other"])
        self.assertEqual(loaded.nodes, {})
        self.delayDisplay("Engine self-test passed")

    def test_ViewList(self):
        self.assertEqual(jobs.parse_view_list("0, 4, 8-10"), [0, 4, 8, 9, 10])
        with self.assertRaises(ValueError):
            jobs.parse_view_list("3-1")

    def test_ReconstructSampleRun(self):
        """FDK from 10 of the 40 frames of the sample run: vessel volume, segmentation, surface, centerlines."""
        import numpy as np

        from SyntheticDSALib import samples

        self.delayDisplay("Simulating the sample rotational run (first use only)")
        name = "AngioReconRotationalRun"
        manifest = samples.ensure_sample(name, Path(slicer.app.cachePath) / "AngioRecon",
                                         env=slicer.util.startupEnvironment())
        dataset = samples.module_inputs(name, manifest)["inputPath"]
        self.delayDisplay("Reconstructing")
        job = jobs.reconstruct_job([dataset], method="fdk", views=10, preset=None, skip=["renderings"])
        loaded = DSAReconstructionLogic().runTask("reconstruct", job, device="cpu", timeout=600,
                                                  rolesToLoad=["volume", "vessel_mask", "mesh", "centerlines"])
        self.assertEqual(loaded.manifest["reconstruction"]["views"], list(range(0, 40, 4)))
        volume = loaded.first("volume")
        self.assertTrue(volume.IsA("vtkMRMLScalarVolumeNode"))
        np.testing.assert_allclose(volume.GetSpacing(), [1.5, 1.5, 1.5])
        segmentation = loaded.first("vessel_mask")
        self.assertTrue(segmentation.IsA("vtkMRMLSegmentationNode"))
        self.assertGreater(loaded.first("mesh").GetPolyData().GetNumberOfPoints(), 100)
        curves = [n for n in loaded.nodes["centerlines"] if n.IsA("vtkMRMLMarkupsCurveNode")]
        self.assertTrue(curves)
        self.assertIsNotNone(curves[0].GetMeasurement("Radius"))
        self.delayDisplay("Sample run reconstructed")
