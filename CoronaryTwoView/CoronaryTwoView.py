"""CoronaryTwoView: 3D coronary arteries from two angiographic views with their C-arm geometry.

Thin Slicer layer over the engine's ``coronary`` task; the background-run machinery and the scene
loading are shared with DSAReconstruction (``EngineTaskLogic``, ``EngineModuleWidget``,
``DSAReconstructionLib``).
"""

from pathlib import Path
from typing import Annotated, Optional

import slicer
from slicer import vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from CoronaryTwoViewLib import jobs
from DSAReconstruction import CATEGORY, CONTRIBUTORS, EngineModuleWidget, EngineTaskLogic, pathIsSet
from DSAReconstructionLib import jobs as sharedJobs
from DSAReconstructionLib import mrml_io
from DSAReconstructionLib.process import BackgroundProcess

#
# CoronaryTwoView
#


class CoronaryTwoView(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Coronary Two-View")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", CATEGORY)]
        self.parent.dependencies = ["DSAReconstruction"]
        self.parent.contributors = CONTRIBUTORS
        self.parent.helpText = _(
            "Reconstruct 3D coronary arteries from two (or three) X-ray angiography views: pick one frame of each XA"
            " run (by number, or at the same cardiac phase), segment the vessels in 2D, and reconstruct the surface"
            " and the centerline tree with radius using the C-arm geometry of the DICOM files. Where a vessel runs"
            " along the two views' epipolar planes its depth stays open (magenta in the overlays); a third view"
            " from an angle out of their plane fixes it.")
        self.parent.acknowledgementText = _("Part of the SlicerAngioRecon extension.")


#
# Parameter node
#


@parameterNodeWrapper
class CoronaryTwoViewParameterNode:
    firstRunPath: Path
    firstFrame: Annotated[int, WithinRange(0, 100000)] = 0
    secondRunPath: Path
    secondFrame: Annotated[int, WithinRange(0, 100000)] = 0
    thirdRunPath: Path
    thirdFrame: Annotated[int, WithinRange(0, 100000)] = 0
    frameSelection: Annotated[str, Choice(list(jobs.FRAME_SELECTIONS))] = "index"
    segmentationMethod: Annotated[str, Choice(list(jobs.SEGMENTATION_METHODS))] = "learned"
    firstMask: vtkMRMLSegmentationNode
    secondMask: vtkMRMLSegmentationNode
    thirdMask: vtkMRMLSegmentationNode
    reconstructionMethod: Annotated[str, Choice(list(jobs.CORONARY_METHODS))] = "default"
    refinePose: bool = False
    useIntensities: bool = True
    device: Annotated[str, Choice(list(sharedJobs.DEVICES))] = "auto"
    outputFolder: Path
    loadMesh: bool = True
    loadCenterlines: bool = True
    loadOverlays: bool = True


def viewMasks(p: CoronaryTwoViewParameterNode) -> list:
    """(drawn segmentation, frame) per view in use: views 1 and 2, and view 3 when its run is set."""
    pairs = [(p.firstMask, p.firstFrame), (p.secondMask, p.secondFrame)]
    if pathIsSet(p.thirdRunPath):
        pairs.append((p.thirdMask, p.thirdFrame))
    return pairs


#
# CoronaryTwoViewWidget
#


class CoronaryTwoViewWidget(EngineModuleWidget):
    def createLogic(self) -> "CoronaryTwoViewLogic":
        return CoronaryTwoViewLogic()

    def updateGuiFromParameterNode(self, p: CoronaryTwoViewParameterNode) -> None:
        byIndex = p.frameSelection == "index"
        third = pathIsSet(p.thirdRunPath)
        self.ui.firstFrameSpinBox.enabled = byIndex
        self.ui.secondFrameSpinBox.enabled = byIndex
        self.ui.thirdFrameSpinBox.enabled = byIndex and third
        drawn = p.segmentationMethod == "masks"
        self.ui.firstMaskSelector.enabled = drawn
        self.ui.secondMaskSelector.enabled = drawn
        self.ui.thirdMaskSelector.enabled = drawn and third

    def canApply(self) -> bool:
        p = self._parameterNode
        masksReady = p.segmentationMethod != "masks" or all(mask is not None for mask, _frame in viewMasks(p))
        return pathIsSet(p.firstRunPath) and pathIsSet(p.secondRunPath) and masksReady

    def startRun(self) -> None:
        self.logic.startReconstruction(self._parameterNode)


#
# CoronaryTwoViewLogic
#


class CoronaryTwoViewLogic(EngineTaskLogic):
    """Two-view coronary reconstruction runs; results (mesh, centerline tree, overlays) into the scene."""

    def getParameterNode(self) -> CoronaryTwoViewParameterNode:
        return CoronaryTwoViewParameterNode(super().getParameterNode())

    def coronaryJob(self, p: CoronaryTwoViewParameterNode, workFolder: Optional[Path] = None) -> dict:
        """Job for ``coronary``; with segmentation ``masks`` the vessels drawn on each view's frame are
        saved into ``workFolder`` first."""
        if not (pathIsSet(p.firstRunPath) and pathIsSet(p.secondRunPath)):
            raise ValueError(_("Select the XA DICOM file of each view."))
        masks = []
        if p.segmentationMethod == "masks":
            if any(seg is None for seg, _frame in viewMasks(p)) or workFolder is None:
                raise ValueError(_("Select the vessel segmentation drawn on each view."))
            masks = [mrml_io.save_frame_mask(slicer.mrmlScene, seg, frame, workFolder / f"mask_view{i + 1}.nrrd")
                     for i, (seg, frame) in enumerate(viewMasks(p))]
        return jobs.coronary_job(p.firstRunPath, p.secondRunPath, first_frame=p.firstFrame,
                                 second_frame=p.secondFrame, third_run=p.thirdRunPath, third_frame=p.thirdFrame,
                                 frame_selection=p.frameSelection,
                                 segmentation=p.segmentationMethod, masks=masks, method=p.reconstructionMethod,
                                 refine_pose=p.refinePose, intensity=p.useIntensities, device=p.device)

    def rolesToLoadFor(self, p: CoronaryTwoViewParameterNode) -> list:
        roles = ["volume", "vessel_mask", "metrics"]
        if p.loadMesh:
            roles.append("mesh")
        if p.loadCenterlines:
            roles.append("centerlines")
        if p.loadOverlays:
            roles += ["images", "overlays"]
        return roles

    def startReconstruction(self, p: CoronaryTwoViewParameterNode) -> BackgroundProcess:
        runFolder = self.newOutputFolder("coronary", p.outputFolder)
        job = self.coronaryJob(p, runFolder.with_name(runFolder.name + "-inputs"))
        return self.startTask("coronary", job, runFolder, device=p.device, rolesToLoad=self.rolesToLoadFor(p))


#
# CoronaryTwoViewTest
#


class CoronaryTwoViewTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: the engine worker through this module's logic, its job building, and the
    simulated two-view sample case reconstructed with the visual hull."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_EngineSelfTest()
        self.setUp()
        self.test_CoronaryJob()
        self.setUp()
        self.test_DrawnMasksJob()
        self.setUp()
        self.test_ReconstructSampleCase()

    def test_EngineSelfTest(self):
        self.delayDisplay("Running the engine self-test")
        loaded = CoronaryTwoViewLogic().runTask("selftest", sharedJobs.selftest_job(steps=2, step_seconds=0.01),
                                                device="cpu", timeout=300)
        self.assertEqual(loaded.manifest["task"], "selftest")
        self.delayDisplay("Engine self-test passed")

    def test_CoronaryJob(self):
        logic = CoronaryTwoViewLogic()
        p = logic.getParameterNode()
        p.firstRunPath = Path("/data/lao30.dcm")
        p.secondRunPath = Path("/data/rao20.dcm")
        p.secondFrame = 12
        job = logic.coronaryJob(p)
        self.assertEqual([v["frame"] for v in job["views"]], [0, 12])
        self.assertEqual(job["method"], "default")
        p.thirdRunPath = Path("/data/cra40.dcm")
        p.thirdFrame = 3
        job = logic.coronaryJob(p)
        self.assertEqual([(Path(v["path"]).name, v["frame"]) for v in job["views"]],
                         [("lao30.dcm", 0), ("rao20.dcm", 12), ("cra40.dcm", 3)])

    def test_DrawnMasksJob(self):
        """Segmentations edited on the views' frames become the job's mask files."""
        import numpy as np

        scene = slicer.mrmlScene
        drawn = np.zeros((2, 6, 7), np.uint8)
        drawn[1, 2:4, 1:6] = 1
        segmentation = mrml_io.add_segmentation(scene, drawn, np.eye(4), "Vessels")
        logic = CoronaryTwoViewLogic()
        p = logic.getParameterNode()
        p.firstRunPath, p.secondRunPath = Path("/data/lao30.dcm"), Path("/data/rao20.dcm")
        p.thirdRunPath = Path("")                      # the parameter node outlives scene clears: no third view yet
        p.frameSelection, p.segmentationMethod = "index", "masks"
        p.firstMask = p.secondMask = segmentation
        p.firstFrame = p.secondFrame = 1
        job = logic.coronaryJob(p, Path(slicer.app.temporaryPath) / "CoronaryTwoViewTest")
        self.assertEqual(job["segmentation"], "masks")
        self.assertEqual(len(job["masks"]), 2)
        self.assertTrue(all(Path(m).is_file() for m in job["masks"]))
        p.firstFrame = 0
        with self.assertRaises(ValueError):
            logic.coronaryJob(p, Path(slicer.app.temporaryPath) / "CoronaryTwoViewTest")
        p.firstFrame = 1
        p.thirdRunPath = Path("/data/cra40.dcm")
        with self.assertRaises(ValueError):            # a third view needs its drawn vessels too
            logic.coronaryJob(p, Path(slicer.app.temporaryPath) / "CoronaryTwoViewTest")
        p.thirdMask, p.thirdFrame = segmentation, 1
        job = logic.coronaryJob(p, Path(slicer.app.temporaryPath) / "CoronaryTwoViewTest")
        self.assertEqual(len(job["masks"]), 3)

    def test_ReconstructSampleCase(self):
        from SyntheticDSALib import samples

        self.delayDisplay("Simulating the two-view sample case (first use only)")
        name = "AngioReconCoronaryTwoView"
        manifest = samples.ensure_sample(name, Path(slicer.app.cachePath) / "AngioRecon",
                                         env=slicer.util.startupEnvironment())
        logic = CoronaryTwoViewLogic()
        p = logic.getParameterNode()
        for parameter, path in samples.module_inputs(name, manifest).items():
            setattr(p, parameter, path)
        p.thirdRunPath = Path("")                      # the sample has two views
        p.firstFrame = p.secondFrame = 0
        p.frameSelection = "index"
        p.segmentationMethod = "frangi"
        p.reconstructionMethod = "hull"
        p.device = "cpu"
        loaded = logic.runTask("coronary", logic.coronaryJob(p), device="cpu", timeout=600,
                               rolesToLoad=["mesh", "centerlines"])
        self.assertGreater(loaded.first("mesh").GetPolyData().GetNumberOfPoints(), 100)
        self.delayDisplay("Two-view sample case reconstructed")
