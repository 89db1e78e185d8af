"""SyntheticDSA: simulated angiography with ground truth inside a real CT, and deep DSA.

Thin Slicer layer over the engine's ``simulate`` and ``ddsa`` tasks; the background-run machinery
and the scene loading are shared with DSAReconstruction (``EngineTaskLogic``, ``EngineModuleWidget``,
``DSAReconstructionLib``).
"""

from pathlib import Path
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLSequenceNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from DSAReconstruction import CATEGORY, CONTRIBUTORS, EngineModuleWidget, EngineTaskLogic
from DSAReconstructionLib import jobs as sharedJobs
from DSAReconstructionLib import mrml_io
from DSAReconstructionLib.process import BackgroundProcess
from SyntheticDSALib import jobs, samples

#
# SyntheticDSA
#


class SyntheticDSA(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Synthetic DSA")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", CATEGORY)]
        self.parent.dependencies = ["DSAReconstruction"]
        self.parent.contributors = CONTRIBUTORS
        self.parent.helpText = _(
            "Simulate X-ray angiography with known ground truth: vessels (from a segmentation, or a grown"
            " vessel tree) and contrast dynamics inside a real CT, X-ray physics and noise; produce a"
            " rotational DSA run, fill/mask/DSA training pairs, or a two-view case. Deep DSA extracts the"
            " vessels from unsubtracted fluoroscopy frames without a mask run.")
        self.parent.acknowledgementText = _("Part of the SlicerAngioRecon extension.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """One SampleData button per sample case of the extension (shipped or simulated on first use)."""
    import SampleData

    for case in samples.SAMPLES.values():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=samples.CATEGORY, sampleName=case.name,
            thumbnailFileName=str(Path(__file__).parent / "Resources" / "Icons" / "SyntheticDSA.png"),
            customDownloader=lambda source: SyntheticDSALogic().loadSampleCase(source.sampleName))


#
# Parameter node
#


@parameterNodeWrapper
class SyntheticDSAParameterNode:
    ctVolume: vtkMRMLScalarVolumeNode
    treeSource: Annotated[str, Choice(list(jobs.TREE_SOURCES))] = "generate"
    vesselSegmentation: vtkMRMLSegmentationNode
    product: Annotated[str, Choice(list(jobs.PRODUCTS))] = "rotational"
    frames: Annotated[int, WithinRange(1, 2000)] = 133
    arcDegrees: Annotated[int, WithinRange(1, 360)] = 200
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: Annotated[str, Choice(list(sharedJobs.DEVICES))] = "auto"
    fluoroSequence: vtkMRMLSequenceNode
    outputFolder: Path
    loadTruth: bool = True
    loadSequences: bool = True


#
# SyntheticDSAWidget
#


class SyntheticDSAWidget(EngineModuleWidget):
    applyText = _("Simulate")

    def createLogic(self) -> "SyntheticDSALogic":
        return SyntheticDSALogic()

    def setup(self) -> None:
        EngineModuleWidget.setup(self)
        self.ui.applyDeepDSAButton.connect("clicked(bool)", self.onApplyDeepDSAButton)

    def updateGuiFromParameterNode(self, p: SyntheticDSAParameterNode) -> None:
        self.ui.vesselSegmentationSelector.enabled = p.treeSource == "segmentation"
        self.ui.arcDegreesSpinBox.enabled = p.product == "rotational"

    def updateRunButtons(self) -> None:
        EngineModuleWidget.updateRunButtons(self)
        p = self._parameterNode
        self.ui.applyDeepDSAButton.enabled = (not self.logic.isRunning() and p is not None
                                              and p.fluoroSequence is not None)

    def canApply(self) -> bool:
        p = self._parameterNode
        return p.ctVolume is not None and (p.treeSource == "generate" or p.vesselSegmentation is not None)

    def startRun(self) -> None:
        self.logic.startSimulation(self._parameterNode)

    def onApplyDeepDSAButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start deep DSA."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self.logic.ensureDependencies(Path(self.resourcePath("requirements.txt")))
            self.logic.startDeepDSA(self._parameterNode)
        self.updateRunButtons()


#
# SyntheticDSALogic
#


class SyntheticDSALogic(EngineTaskLogic):
    """Simulation and deep-DSA runs: scene inputs saved for the engine, results into the scene."""

    def getParameterNode(self) -> SyntheticDSAParameterNode:
        return SyntheticDSAParameterNode(super().getParameterNode())

    def simulationJob(self, p: SyntheticDSAParameterNode, workFolder: Path) -> dict:
        if p.ctVolume is None:
            raise ValueError(_("Select the CT volume to simulate in."))
        ct = mrml_io.save_volume(slicer.mrmlScene, p.ctVolume, workFolder / "ct.nrrd")
        vessels = []
        if p.treeSource == "segmentation":
            if p.vesselSegmentation is None:
                raise ValueError(_("Select the vessel segmentation, or let the engine generate a tree."))
            vessels.append(mrml_io.save_segmentation_labelmap(slicer.mrmlScene, p.vesselSegmentation, p.ctVolume,
                                                              workFolder / "vessels.nrrd"))
        return jobs.simulate_job(p.product, ct, vessel_masks=vessels, frames=p.frames, arc_degrees=p.arcDegrees,
                                 seed=p.seed)

    def rolesToLoadFor(self, p: SyntheticDSAParameterNode) -> list:
        roles = []
        if p.loadTruth:
            roles += ["volume", "vessel_mask", "segmentation", "mesh", "centerlines"]
        if p.loadSequences:
            roles += ["sequence", "projections", "images"]
        return roles

    def startSimulation(self, p: SyntheticDSAParameterNode) -> BackgroundProcess:
        runFolder = self.newOutputFolder("simulate", p.outputFolder)
        job = self.simulationJob(p, runFolder.with_name(runFolder.name + "-inputs"))
        return self.startTask("simulate", job, runFolder, device=p.device, rolesToLoad=self.rolesToLoadFor(p))

    def loadSampleCase(self, name: str) -> list:
        """Load a sample case into the scene and point its module's inputs at it; returns the nodes.

        Simulated cases are generated by the engine on first use (about half a minute, cached in
        Slicer's cache folder).
        """
        case = samples.SAMPLES[name]
        scene = slicer.mrmlScene
        if case.job is None:
            files = samples.shipped_files(name)
            ct = mrml_io.load_volume(scene, files["ct"], "AortaCTA")
            vessels = mrml_io.load_segmentation(scene, files["vessels"], "AortaCTA vessels")
            p = self.getParameterNode()
            p.ctVolume, p.vesselSegmentation, p.treeSource = ct, vessels, "segmentation"
            slicer.util.setSliceViewerLayers(background=ct, fit=True)
            return [ct, vessels]
        with slicer.util.WaitCursor():
            slicer.util.showStatusMessage(_("Simulating the {title} (first use only)...").format(title=case.title))
            manifest = samples.ensure_sample(name, Path(slicer.app.cachePath) / "AngioRecon",
                                             env=slicer.util.startupEnvironment())
            loaded = mrml_io.load_manifest(scene, manifest, list(case.roles))
        moduleParameters = slicer.util.getModuleLogic(case.module).getParameterNode()
        for parameter, path in samples.module_inputs(name, manifest).items():
            setattr(moduleParameters, parameter, path)
        if case.module == "DSAReconstruction":
            moduleParameters.inputType = "dataset"
        return [node for nodes in loaded.nodes.values() for node in nodes]

    def showResults(self, loaded: mrml_io.LoadedOutputs) -> None:
        """Deep DSA: the input frames and the result side by side (input left), playing together."""
        EngineTaskLogic.showResults(self, loaded)
        fluoro = self.getParameterNode().fluoroSequence
        if loaded.manifest.get("task") != "ddsa" or fluoro is None:
            return
        results = [n for n in loaded.nodes.get("sequence", []) if n.IsA("vtkMRMLSequenceNode")]
        inputBrowser = mrml_io.browser_of(slicer.mrmlScene, fluoro)
        if not results or inputBrowser is None:
            return
        inputBrowser.AddSynchronizedSequenceNode(results[0])
        slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(inputBrowser)
        resultProxy = inputBrowser.GetProxyNode(results[0])
        if resultProxy is not None:
            mrml_io.show_side_by_side(slicer.mrmlScene, inputBrowser.GetProxyNode(fluoro), resultProxy)

    def startDeepDSA(self, p: SyntheticDSAParameterNode) -> BackgroundProcess:
        if p.fluoroSequence is None:
            raise ValueError(_("Select the fluoroscopy sequence to apply deep DSA to."))
        runFolder = self.newOutputFolder("ddsa", p.outputFolder)
        frames = mrml_io.save_stack(slicer.mrmlScene, p.fluoroSequence,
                                    runFolder.with_name(runFolder.name + "-inputs") / "frames.nrrd")
        return self.startTask("ddsa", jobs.ddsa_job([frames]), runFolder, device=p.device,
                              rolesToLoad=["images", "sequence", "projections"])


#
# SyntheticDSATest
#


class SyntheticDSATest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: the engine worker through this module's logic, the shipped sample case, and
    a tiny simulation (two training pairs in the shipped CT) loaded back into the scene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_EngineSelfTest()
        self.setUp()
        self.test_SimulationJob()
        self.setUp()
        self.test_ShippedSampleCase()
        self.setUp()
        self.test_SimulatePairs()

    def test_EngineSelfTest(self):
        self.delayDisplay("Running the engine self-test")
        loaded = SyntheticDSALogic().runTask("selftest", sharedJobs.selftest_job(steps=2, step_seconds=0.01),
                                             device="cpu", timeout=300)
        self.assertEqual(loaded.manifest["task"], "selftest")
        self.assertEqual(loaded.manifest["job"]["steps"], 2)
        self.delayDisplay("Engine self-test passed")

    def test_SimulationJob(self):
        import numpy as np

        logic = SyntheticDSALogic()
        p = logic.getParameterNode()
        p.ctVolume = mrml_io.add_volume(slicer.mrmlScene, np.zeros((4, 5, 6), np.int16), np.eye(4), "CT")
        p.product = "pairs"
        workFolder = Path(slicer.app.temporaryPath) / "SyntheticDSATest"
        job = logic.simulationJob(p, workFolder)
        self.assertEqual(job["product"], "pairs")
        self.assertTrue(Path(job["ct"]).is_file())
        self.assertEqual(job["vessels"], [])

    def test_ShippedSampleCase(self):
        """The SampleData button of the shipped aorta CTA fills this module's inputs."""
        logic = SyntheticDSALogic()
        ct, vessels = logic.loadSampleCase("AngioReconAortaCTA")
        p = logic.getParameterNode()
        self.assertIs(p.ctVolume, ct)
        self.assertIs(p.vesselSegmentation, vessels)
        self.assertEqual(p.treeSource, "segmentation")
        self.assertEqual(vessels.GetSegmentation().GetNumberOfSegments(), 6)

    def test_SimulatePairs(self):
        self.delayDisplay("Simulating two fill/mask/DSA pairs")
        job = jobs.simulate_job("pairs", sample="aorta_cta", count=2, detector=64, seed=3)
        loaded = SyntheticDSALogic().runTask("simulate", job, device="cpu", timeout=600, rolesToLoad=["images"])
        sequences = {n.GetName(): n for n in loaded.nodes["images"] if n.IsA("vtkMRMLSequenceNode")}
        self.assertEqual(sorted(sequences), ["dsa", "fill", "mask", "vessel_2d"])
        self.assertEqual(sequences["dsa"].GetNumberOfDataNodes(), 2)
        self.assertEqual(sequences["dsa"].GetNthDataNode(0).GetImageData().GetDimensions(), (64, 64, 1))
        self.delayDisplay("Pairs simulated")
