"""DICOM XA/XRF reader and writer: round trips, PS3.3 semantics, sign conventions, Slicer/GDCM, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedXAImageStorage, ExplicitVRLittleEndian, generate_uid

from angiorecon.errors import BadInput, OutOfMemory
from angiorecon.formats.dicom_xa import (XAOverrides, log_intensity, read_xa, subtracted_line_integrals,
                                         write_xa, write_xa_geometry, xa_params_from_geometry)
from angiorecon.formats.xa_study import load_study, select_dsa
from angiorecon.geometry import ConeBeamGeometry

SID, SOD, SPACING = 1195.0, 785.0, (0.308, 0.296)


def _run(tmp_path: Path, name: str = "run.dcm", n: int = 6, h: int = 16, w: int = 12, **kw) -> Path:
    rng = np.random.default_rng(len(name))
    frames = kw.pop("frames", rng.uniform(200.0, 4000.0, (n, h, w)).astype(np.float32))
    kw.setdefault("primary_deg", -100.0 + 2.5 * np.arange(n))
    kw.setdefault("secondary_deg", 0.0)
    kw.setdefault("frame_time_ms", 33.3)
    return write_xa(tmp_path / name, frames, sid=kw.pop("sid", SID), sod=kw.pop("sod", SOD),
                    pixel_spacing=kw.pop("pixel_spacing", SPACING), **kw)


# ------------------------------------------------------------------------------- round trips
def test_multiframe_round_trip_vector_increments(tmp_path):
    n = 7
    prim = np.array([-100.0, -97.25, -94.5, -91.0, -88.125, -85.0, -80.5])      # irregular steps
    sec = np.array([10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0])
    times = np.array([0.0, 0.04, 0.08, 0.125, 0.165, 0.2, 0.25])                   # irregular → FrameTimeVector
    frames = np.random.default_rng(1).uniform(0.5, 3.0, (n, 16, 12)).astype(np.float32)
    path = write_xa(tmp_path / "a.dcm", frames, primary_deg=prim, secondary_deg=sec, sid=SID, sod=SOD,
                    pixel_spacing=SPACING, times_s=times)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.12.1" and ds.Modality == "XA"
    assert ds.PositionerMotion == "DYNAMIC" and len(ds.PositionerPrimaryAngleIncrement) == n
    assert "FrameTimeVector" in ds and ds.FrameIncrementPointer[0] == 0x00181065
    run = read_xa(path)
    np.testing.assert_allclose(run.primary_deg, prim, rtol=0, atol=1e-9)
    np.testing.assert_allclose(run.secondary_deg, sec, rtol=0, atol=1e-9)
    np.testing.assert_allclose(run.times_s, times, rtol=0, atol=1e-12)
    assert np.all(run.sid == SID) and np.all(run.sod == SOD) and run.pixel_spacing == SPACING
    assert run.frames.shape == (n, 16, 12) and run.intensity_relationship == "LIN" and run.intensity_sign == 1
    step = (frames.max() - frames.min()) / 65535
    assert np.max(np.abs(run.frames - frames)) <= 0.5 * step * 1.01 + 1e-6
    assert run.valid_mask.shape == (n, 16, 12) and run.valid_mask.all() and not run.subtracted


def test_average_increment_and_frame_time(tmp_path):
    path = _run(tmp_path, n=5, increment_form="average", frame_time_ms=66.7)
    ds = pydicom.dcmread(path)
    assert float(ds.PositionerPrimaryAngleIncrement) == 2.5 and float(ds.FrameTime) == 66.7
    run = read_xa(path)
    np.testing.assert_allclose(run.primary_deg, -100 + 2.5 * np.arange(5), atol=1e-12)
    np.testing.assert_allclose(run.times_s, 0.0667 * np.arange(5), atol=1e-12)


def test_absolute_angles_in_increment_vector_with_zero_base(tmp_path):
    """PS3.3 C.8.7.5.1.3 allows absolute angles in the increment vector with base 0."""
    path = _run(tmp_path, n=4, primary_deg=0.0)
    ds = pydicom.dcmread(path)
    ds.PositionerMotion = "DYNAMIC"
    ds.PositionerPrimaryAngle = 0
    ds.PositionerPrimaryAngleIncrement = [30, 33, 37, 40]
    ds.save_as(path)
    np.testing.assert_array_equal(read_xa(path).primary_deg, [30, 33, 37, 40])


def test_increment_with_wrong_number_of_values_is_refused(tmp_path):
    path = _run(tmp_path, n=4)
    ds = pydicom.dcmread(path)
    ds.PositionerPrimaryAngleIncrement = [0, 1, 2]
    ds.save_as(path)
    with pytest.raises(BadInput, match=r"PositionerPrimaryAngleIncrement \(0018,1520\) has 3 values.*NumberOfFrames = 4"):
        read_xa(path)


def test_dynamic_without_increment_is_refused_and_override_fixes_it(tmp_path):
    path = _run(tmp_path, n=4)
    ds = pydicom.dcmread(path)
    del ds.PositionerSecondaryAngleIncrement
    ds.save_as(path)
    run = read_xa(path)          # one increment present: the other axis is static, with a warning
    assert run.secondary_deg.tolist() == [0.0] * 4 and any("only one angle increment" in w for w in run.warnings)
    del ds.PositionerPrimaryAngleIncrement
    ds.save_as(path)
    with pytest.raises(BadInput, match=r"DYNAMIC.*PositionerPrimaryAngleIncrement \(0018,1520\).*--primary"):
        read_xa(path)
    run = read_xa(path, XAOverrides(primary_deg=(1.0, 2.0, 3.0, 4.0)))
    np.testing.assert_array_equal(run.primary_deg, [1, 2, 3, 4])


def test_single_frame_and_static_runs(tmp_path):
    img = np.random.default_rng(2).integers(0, 4000, (20, 18)).astype(np.uint16)
    path = write_xa(tmp_path / "single.dcm", img, primary_deg=-30.0, secondary_deg=25.0, sid=SID, sod=SOD,
                    pixel_spacing=SPACING)
    ds = pydicom.dcmread(path)
    assert "NumberOfFrames" not in ds and "RealWorldValueMappingSequence" not in ds
    run = read_xa(path)
    assert run.frames.shape == (1, 20, 18) and np.array_equal(run.frames[0], img.astype(np.float32))
    assert run.primary_deg.tolist() == [-30.0] and run.secondary_deg.tolist() == [25.0]
    assert run.times_s.tolist() == [0.0]
    static = read_xa(_run(tmp_path, "static.dcm", n=3, primary_deg=45.0))
    assert pydicom.dcmread(tmp_path / "static.dcm").PositionerMotion == "STATIC"
    assert static.primary_deg.tolist() == [45.0] * 3


def test_xrf_sop_class_reads(tmp_path):
    run = read_xa(_run(tmp_path, "rf.dcm", n=2, xrf=True))
    assert run.sop_class_uid == "1.2.840.10008.5.1.4.1.1.12.2" and run.n_frames == 2


def test_geometry_from_dicom_equals_geometry_by_hand(tmp_path):
    prim = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])
    sec = np.array([-20.0, -10.0, 0.0, 10.0, 20.0])
    path = _run(tmp_path, n=5, h=24, w=20, primary_deg=prim, secondary_deg=sec)
    run = read_xa(path)
    hand = ConeBeamGeometry.from_xa_angles(prim, sec, SID, SOD, SPACING, (24, 20))
    np.testing.assert_allclose(run.geometry.projection_matrices(), hand.projection_matrices(), rtol=1e-12, atol=1e-12)
    assert run.geometry.det_shape == (24, 20)


# ------------------------------------------------------------------------------- sign conventions
def _project(prim: float, sec: float, point: tuple[float, float, float]) -> tuple[float, float]:
    """(column, row) offset of a world point from the image centre, in pixels."""
    h, w = 101, 101
    g = ConeBeamGeometry.from_xa_angles([prim], [sec], SID, SOD, (0.3, 0.3), (h, w))
    col, row = g.project_points(np.asarray([point], dtype=float))[0, 0]
    return col - (w - 1) / 2, row - (h - 1) / 2


def test_sign_conventions_follow_ps3_3_definitions(tmp_path):
    """Expectations written from PS3.3 C.8.7.5.1.2 (patient LPS frame: +x left, +y posterior, +z head).

    At 0°/0° the patient faces the detector, so the detector is anterior and the source posterior.
    +90° primary = LAO (detector at the patient's left), −90° = RAO, +secondary = CRA (detector toward
    the head). Legacy XA images are heads-up as seen from the detector facing the patient: image up =
    toward the head, and at AP the patient's left is on the image's right (higher column).
    """
    run = read_xa(_run(tmp_path, "ap.dcm", n=1, primary_deg=0.0, secondary_deg=0.0))
    g = run.geometry
    assert g.source[0, 1] > 0 and g.det_center[0, 1] < 0          # source posterior, detector anterior
    # AP: patient's left → right side of the image; head → top of the image.
    dc, dr = _project(0, 0, (40, 0, 0))
    assert dc > 0 and abs(dr) < 1e-9
    assert dc == pytest.approx(40 * SID / SOD / 0.3)             # isocentre plane magnification SID/SOD
    dc, dr = _project(0, 0, (0, 0, 40))
    assert dr < 0 and abs(dc) < 1e-9
    # A point nearer the source (posterior at AP) is magnified more than one nearer the detector.
    assert _project(0, 0, (40, 100, 0))[0] > _project(0, 0, (40, -100, 0))[0]
    # LAO 90: detector at the patient's left; seen from there, the patient's back is on the image's right.
    g90 = ConeBeamGeometry.from_xa_angles([90.0], [0.0], SID, SOD, (0.3, 0.3), (101, 101))
    assert g90.det_center[0, 0] > 0 and g90.source[0, 0] < 0
    assert _project(90, 0, (0, -40, 0))[0] < 0 < _project(90, 0, (0, 40, 0))[0]
    assert _project(90, 0, (0, 0, 40))[1] < 0
    # RAO 90: detector at the patient's right; the patient's front is on the image's right.
    assert _project(-90, 0, (0, -40, 0))[0] > 0
    # LAO 45: the detector sits anterior-left, halfway.
    g45 = ConeBeamGeometry.from_xa_angles([45.0], [0.0], SID, SOD, (0.3, 0.3), (101, 101))
    d = g45.det_center[0] / np.linalg.norm(g45.det_center[0])
    np.testing.assert_allclose(d, [np.sqrt(0.5), -np.sqrt(0.5), 0], atol=1e-12)
    # CRA 30: detector tilted toward the head; an anterior point (toward the detector) drops in the image,
    # a cranial point still rises; CAU 30 the other way round.
    gc = ConeBeamGeometry.from_xa_angles([0.0], [30.0], SID, SOD, (0.3, 0.3), (101, 101))
    assert gc.det_center[0, 2] > 0 and gc.source[0, 2] < 0
    assert _project(0, 30, (0, -40, 0))[1] > 0
    assert _project(0, 30, (0, 0, 40))[1] < 0
    assert _project(0, -30, (0, -40, 0))[1] < 0
    # The isocentre always projects to the image centre.
    for a, b in ((0, 0), (37, -12), (-120, 25)):
        assert np.allclose(_project(a, b, (0, 0, 0)), 0, atol=1e-9)


# ------------------------------------------------------------------------------- Enhanced XA
def _enhanced(tmp_path: Path, prim: list[float], sec: list[float], *, per_frame_geometry: bool = False) -> Path:
    n, h, w = len(prim), 10, 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedXAImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = EnhancedXAImageStorage, meta.MediaStorageSOPInstanceUID, "XA"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelIntensityRelationship = "LIN"

    def item(**kw):
        it = Dataset()
        for k, v in kw.items():
            setattr(it, k, v)
        return it

    shared = item(FramePixelDataPropertiesSequence=DicomSequence([item(ImagerPixelSpacing=[0.2, 0.25])]))
    if not per_frame_geometry:
        shared.XRayGeometrySequence = DicomSequence([item(DistanceSourceToIsocenter=750.0,
                                                          DistanceSourceToDetector=1100.0)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per = []
    for k in range(n):
        it = item(PositionerPositionSequence=DicomSequence([item(PositionerPrimaryAngle=prim[k],
                                                                 PositionerSecondaryAngle=sec[k])]),
                  FrameContentSequence=DicomSequence([item(FrameAcquisitionDateTime=f"20240101120000.{k * 125000:06d}")]))
        if per_frame_geometry:
            it.XRayGeometrySequence = DicomSequence([item(DistanceSourceToIsocenter=750.0 + k,
                                                          DistanceSourceToDetector=1100.0 + 2 * k)])
        per.append(it)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per)
    ds.PixelData = (np.arange(n * h * w, dtype=np.uint16) % 4096).tobytes()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_xa_per_frame_then_shared(tmp_path):
    prim, sec = [10.0, 12.0, 15.0], [-5.0, -4.0, -2.5]
    run = read_xa(_enhanced(tmp_path, prim, sec))
    assert run.enhanced and run.primary_deg.tolist() == prim and run.secondary_deg.tolist() == sec
    assert run.sod.tolist() == [750.0] * 3 and run.sid.tolist() == [1100.0] * 3 and run.pixel_spacing == (0.2, 0.25)
    np.testing.assert_allclose(run.times_s, [0, 0.125, 0.25], atol=1e-9)
    assert run.value_max == 4095
    hand = ConeBeamGeometry.from_xa_angles(prim, sec, 1100.0, 750.0, (0.2, 0.25), (10, 8))
    np.testing.assert_allclose(run.geometry.projection_matrices(), hand.projection_matrices(), atol=1e-12)
    run2 = read_xa(_enhanced(tmp_path, prim, sec, per_frame_geometry=True))
    assert run2.sod.tolist() == [750.0, 751.0, 752.0] and run2.sid.tolist() == [1100.0, 1102.0, 1104.0]


def test_enhanced_missing_positioner_names_macro_and_flag(tmp_path):
    path = _enhanced(tmp_path, [1.0, 2.0], [0.0, 0.0])
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[1].PositionerPositionSequence
    ds.save_as(path)
    with pytest.raises(BadInput, match=r"frame 2: PositionerPrimaryAngle \(0018,1510\).*PositionerPositionSequence.*--primary"):
        read_xa(path)


# ------------------------------------------------------------------------------- shutters, intensities
def test_shutters_give_valid_mask(tmp_path):
    run = read_xa(_run(tmp_path, n=2, h=16, w=12, shutter_rect=(3, 10, 2, 15)))
    m = run.valid_mask[0]
    assert m[1:15, 2:10].all() and m.sum() == 14 * 8 and not m[0].any() and not m[:, :2].any()
    run = read_xa(_run(tmp_path, "circ.dcm", n=1, h=21, w=21, shutter_circle=(11, 11, 5)))
    m = run.valid_mask[0]
    assert m[10, 10] and m[10, 15] and not m[10, 16] and not m[0, 0]
    ds = pydicom.dcmread(tmp_path / "circ.dcm")
    ds.CollimatorShape = "POLYGONAL"
    ds.VerticesOfThePolygonalCollimator = [1, 1, 1, 21, 21, 1]           # upper-left triangle
    ds.save_as(tmp_path / "circ.dcm")
    m = read_xa(tmp_path / "circ.dcm").valid_mask[0]
    assert m[10, 10] and m[8, 8] and not m[12, 12] and not m[10, 16]


def test_intensity_relationships(tmp_path):
    frames = np.full((2, 4, 4), 100, dtype=np.uint16)
    frames[1] = 1000
    lin = read_xa(write_xa(tmp_path / "lin.dcm", frames, primary_deg=0, secondary_deg=0, sid=SID, sod=SOD,
                           pixel_spacing=SPACING))
    np.testing.assert_allclose(log_intensity(lin)[:, 0, 0], np.log([100, 1000]), rtol=1e-6)
    neg = read_xa(write_xa(tmp_path / "neg.dcm", frames, primary_deg=0, secondary_deg=0, sid=SID, sod=SOD,
                           pixel_spacing=SPACING, intensity_sign=-1))
    np.testing.assert_allclose(log_intensity(neg)[:, 0, 0], np.log([65535 - 100, 65535 - 1000]), rtol=1e-6)
    log = read_xa(write_xa(tmp_path / "log.dcm", frames, primary_deg=0, secondary_deg=0, sid=SID, sod=SOD,
                           pixel_spacing=SPACING, intensity_relationship="LOG", intensity_sign=-1))
    np.testing.assert_allclose(log_intensity(log)[:, 0, 0], [-100, -1000])
    disp = read_xa(write_xa(tmp_path / "disp.dcm", frames, primary_deg=0, secondary_deg=0, sid=SID, sod=SOD,
                            pixel_spacing=SPACING, intensity_relationship="DISP"))
    assert any("DISP" in w for w in disp.warnings)


def test_subtracted_line_integrals_round_trip(tmp_path):
    li = np.zeros((3, 8, 8), np.float32)
    li[:, 3:5, 2:6] = [[[0.5]], [[1.0]], [[1.5]]]
    run = read_xa(_run(tmp_path, "sub.dcm", n=3, h=8, w=8, frames=li, subtracted=True))
    assert run.subtracted and run.quantity == "line_integral" and run.intensity_relationship == "LOG"
    np.testing.assert_allclose(subtracted_line_integrals(run), li, atol=1.6 / 65535)
    # A vendor-style subtracted run (mid-grey background, vessels dark, no line-integral label).
    vendor = np.full((2, 8, 8), 2048, np.uint16)
    vendor[:, 2:4, 2:4] = 1848
    run = read_xa(_run(tmp_path, "vsub.dcm", n=2, h=8, w=8, frames=vendor, subtracted=True,
                       intensity_relationship="LIN", intensity_sign=1))
    li2 = subtracted_line_integrals(run)
    assert li2[0, 2, 2] == 200 and li2[0, 0, 0] == 0


# ------------------------------------------------------------------------------- geometry → DICOM
def test_vpal_geometry_written_as_xa_describes_the_same_rays(tmp_path):
    """A VPAL/4DRGS circular geometry has mirrored columns w.r.t. DICOM: the writer flips the frames."""
    th = np.deg2rad(np.array([0.0, 30.0, 75.0, 140.0]))
    g = ConeBeamGeometry.circular(th, 750.0, 1150.0, (12, 10), (0.4, 0.35), times=np.array([0, 0.1, 0.2, 0.3]))
    p = xa_params_from_geometry(g)
    assert p.flip_columns and not p.flip_rows and p.sod == pytest.approx(750) and p.sid == pytest.approx(1150)
    np.testing.assert_allclose(p.primary_deg, np.rad2deg(th) - 90, atol=1e-9)
    frames = np.random.default_rng(3).uniform(1, 2, (4, 12, 10)).astype(np.float32)
    run = read_xa(write_xa_geometry(tmp_path / "g.dcm", frames, g))
    np.testing.assert_allclose(run.times_s, g.times, atol=1e-12)
    for v in range(4):
        np.testing.assert_allclose(run.geometry.pixel_centers(v)[:, ::-1], g.pixel_centers(v), atol=1e-6)
        np.testing.assert_allclose(run.geometry.source[v], g.source[v], atol=1e-6)
    np.testing.assert_allclose(run.frames[:, :, ::-1], frames, atol=1e-4)
    tilted = ConeBeamGeometry(g.source, g.det_center, g.det_v * 0.35 / 0.4, g.det_u * 0.4 / 0.35, (12, 10))
    with pytest.raises(BadInput, match="heads-up"):
        xa_params_from_geometry(tilted)


# ------------------------------------------------------------------------------- Slicer / GDCM
_GDCM_SCRIPT = """
import json, sys
import numpy as np
import slicer
from vtk.util.numpy_support import vtk_to_numpy
reader = slicer.vtkITKArchetypeImageSeriesScalarReader()
reader.SetArchetype(sys.argv[1])
reader.SetSingleFile(1)
reader.SetDICOMImageIOApproachToGDCM()
reader.SetOutputScalarTypeToNative()
reader.Update()
image = reader.GetOutput()
values = vtk_to_numpy(image.GetPointData().GetScalars())
print(json.dumps({"dims": image.GetDimensions(), "spacing": image.GetSpacing(), "sum": int(values.astype(np.int64).sum())}))
"""


def test_slicer_gdcm_reader_sees_frames_spacing_and_frame_time(tmp_path):
    """Slicer's sequence plugin reads XA through GDCM: spacing = Imager Pixel Spacing, z = Frame Time (ms).

    Runs in a child process, so the slicer-core import stays out of this test session.
    """
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("slicer") is None:
        pytest.skip("slicer-core is not installed")
    path = _run(tmp_path, n=8, h=48, w=64, frame_time_ms=33.3, primary_deg=-100 + 2.5 * np.arange(8))
    out = subprocess.run([sys.executable, "-c", _GDCM_SCRIPT, str(path)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(res["dims"]) == (64, 48, 8)
    np.testing.assert_allclose(res["spacing"], (SPACING[1], SPACING[0], 33.3), rtol=1e-9)
    assert res["sum"] == int(pydicom.dcmread(path).pixel_array.astype(np.int64).sum())


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("keyword,tag,flag", [
    ("DistanceSourceToDetector", "(0018,1110)", "--sid"),
    ("DistanceSourceToPatient", "(0018,1111)", "--sod"),
    ("PositionerPrimaryAngle", "(0018,1510)", "--primary"),
    ("PositionerSecondaryAngle", "(0018,1511)", "--secondary"),
])
def test_missing_geometry_tag_names_tag_and_flag_and_override_works(tmp_path, keyword, tag, flag):
    path = _run(tmp_path, n=3)
    ds = pydicom.dcmread(path)
    delattr(ds, keyword)
    ds.save_as(path)
    with pytest.raises(BadInput, match=rf"{keyword} \{tag[:-1]}\).*{flag}"):
        read_xa(path)
    ov = {"--sid": XAOverrides(sid=1300.0), "--sod": XAOverrides(sod=700.0),
          "--primary": XAOverrides(primary_deg=(5.0,)), "--secondary": XAOverrides(secondary_deg=(7.0,))}[flag]
    run = read_xa(path, ov)
    assert run.n_frames == 3


def test_pixel_spacing_fallback_and_missing(tmp_path):
    path = _run(tmp_path, n=2)
    ds = pydicom.dcmread(path)
    del ds.ImagerPixelSpacing
    ds.save_as(path)
    with pytest.raises(BadInput, match=r"ImagerPixelSpacing \(0018,1164\).*--pixel-spacing"):
        read_xa(path)
    assert read_xa(path, XAOverrides(pixel_spacing=(0.2, 0.2))).pixel_spacing == (0.2, 0.2)
    ds.PixelSpacing = [0.15, 0.15]
    ds.save_as(path)
    run = read_xa(path)
    assert run.pixel_spacing == (0.15, 0.15) and any("PixelSpacing" in w for w in run.warnings)


def test_non_xa_dicom_is_refused_naming_its_class(tmp_path):
    from pydicom import examples

    ct = tmp_path / "ct.dcm"
    examples.ct.save_as(ct)
    with pytest.raises(BadInput, match=r"not an X-ray angiography image: SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2 "
                                       r"\(CT Image Storage\), modality CT"):
        read_xa(ct)


def test_corrupt_truncated_and_garbage_files(tmp_path):
    good = _run(tmp_path, n=4).read_bytes()
    (tmp_path / "garbage.dcm").write_bytes(b"hello world, not DICOM" * 10)
    with pytest.raises(BadInput, match="not a DICOM file"):
        read_xa(tmp_path / "garbage.dcm")
    (tmp_path / "trunc.dcm").write_bytes(good[: len(good) - 500])
    with pytest.raises(BadInput, match="truncated"):
        read_xa(tmp_path / "trunc.dcm")
    (tmp_path / "head.dcm").write_bytes(good[:300])
    with pytest.raises(BadInput):
        read_xa(tmp_path / "head.dcm")
    with pytest.raises(BadInput, match="does not exist"):
        read_xa(tmp_path / "nope.dcm")


def test_enormous_frame_count_fails_before_decoding(tmp_path):
    path = _run(tmp_path, n=2)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.Rows, ds.Columns = 100000, 4096, 4096
    ds.save_as(path)
    with pytest.raises(OutOfMemory, match="100000 frames of 4096x4096"):
        read_xa(path)


def test_nan_values_are_refused(tmp_path):
    with pytest.raises(BadInput, match="NaN"):
        write_xa(tmp_path / "x.dcm", np.full((2, 4, 4), np.nan), primary_deg=0, secondary_deg=0, sid=SID, sod=SOD,
                 pixel_spacing=SPACING)
    assert not (tmp_path / "x.dcm").exists()
    path = _run(tmp_path, n=2, h=4, w=4)
    ds = pydicom.dcmread(path)
    ds.RealWorldValueMappingSequence[0].RealWorldValueSlope = float("inf")
    ds.save_as(path)
    with pytest.raises(BadInput, match="NaN or infinite"):
        read_xa(path)


# ------------------------------------------------------------------------------- study
def _pair(tmp_path: Path, n: int = 5, *, mask_angles=None, fill_n=None, hints=("", "")):
    rng = np.random.default_rng(7)
    mask = rng.uniform(2000, 3000, (n, 12, 10)).astype(np.float32)
    li = np.zeros_like(mask)
    li[:, 4:8, 3:6] = 0.7
    fill = mask * np.exp(-li)
    study = generate_uid()
    prim = -100 + 2.5 * np.arange(n)
    m = write_xa(tmp_path / "mask.dcm", mask, primary_deg=prim if mask_angles is None else mask_angles,
                 secondary_deg=0, sid=SID, sod=SOD, pixel_spacing=SPACING, study_uid=study, series_number=1,
                 series_description=hints[0])
    fn = n if fill_n is None else fill_n
    f = write_xa(tmp_path / "fill.dcm", fill[:fn] if fn <= n else np.concatenate([fill, fill[:fn - n]]),
                 primary_deg=-100 + 2.5 * np.arange(fn), secondary_deg=0, sid=SID, sod=SOD, pixel_spacing=SPACING,
                 study_uid=study, series_number=2, series_description=hints[1])
    return m, f, li


def test_fill_mask_pairing_by_intensity_and_by_hint(tmp_path):
    _, _, li = _pair(tmp_path)
    sig = select_dsa(load_study([tmp_path]).runs)
    assert sig.fill.source_files[0].endswith("fill.dcm") and "mean intensity" in sig.how
    np.testing.assert_allclose(sig.line_integrals, li, atol=2e-4)
    assert sig.line_integrals.min() >= 0
    # A description saying MASK wins over intensities, even when it contradicts them.
    (tmp_path / "mask.dcm").unlink()
    (tmp_path / "fill.dcm").unlink()
    _pair(tmp_path, hints=("FILL run", "MASK run"))
    sig = select_dsa(load_study([tmp_path]).runs)
    assert sig.mask.source_files[0].endswith("fill.dcm") and "description" in sig.how


def test_fill_mask_mismatches_are_named(tmp_path):
    _pair(tmp_path, fill_n=6)
    with pytest.raises(BadInput, match=r"different frame counts \(5 vs 6\)|different frame counts \(6 vs 5\)"):
        select_dsa(load_study([tmp_path]).runs)
    for f in tmp_path.iterdir():
        f.unlink()
    _pair(tmp_path, mask_angles=-100 + 2.5 * np.arange(5) + np.array([0, 0, 3.0, 0, 0]))
    with pytest.raises(BadInput, match=r"different primary angles \(by 3\.00° at frame 3"):
        select_dsa(load_study([tmp_path]).runs)


def test_log_domain_pair_is_a_difference(tmp_path):
    logm = np.full((2, 6, 6), 5.0, np.float32)
    logf = logm.copy()
    logf[:, 2, 2] = 4.2
    study = generate_uid()
    for name, v, d in (("m.dcm", logm, "MASK"), ("f.dcm", logf, "FILL")):
        write_xa(tmp_path / name, v, primary_deg=[0.0, 1.0], secondary_deg=0, sid=SID, sod=SOD, pixel_spacing=SPACING,
                 intensity_relationship="LOG", intensity_sign=1, study_uid=study, series_description=d)
    sig = select_dsa(load_study([tmp_path]).runs)
    assert sig.line_integrals[0, 2, 2] == pytest.approx(0.8, abs=1e-3) and sig.line_integrals[0, 0, 0] == 0


def test_study_inputs_edge_cases(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="is empty"):
        load_study([tmp_path / "empty"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    from pydicom import examples

    examples.ct.save_as(other / "ct.dcm")
    with pytest.raises(BadInput, match="no XA/XRF image found.*CT Image Storage"):
        load_study([other])
    _run(other, "xa.dcm", n=3)
    study = load_study([other])
    assert len(study.runs) == 1 and len(study.skipped) == 2
    with pytest.raises(BadInput, match="only one unsubtracted run.*--subtracted"):
        select_dsa(study.runs)
    sig = select_dsa(study.runs, subtracted=True)
    assert sig.line_integrals.shape == (3, 16, 12)


def test_compressed_pixel_data_jpeg2000_and_rle(tmp_path):
    """Compressed XA decodes through pylibjpeg-openjpeg (JPEG 2000) and pydicom's RLE decoder."""
    from pydicom.uid import JPEG2000Lossless, RLELossless

    frames = np.random.default_rng(4).integers(0, 60000, (2, 32, 32)).astype(np.uint16)
    path = write_xa(tmp_path / "raw.dcm", frames, primary_deg=[0.0, 2.0], secondary_deg=0, sid=SID, sod=SOD,
                    pixel_spacing=SPACING)
    for ts in (JPEG2000Lossless, RLELossless):
        ds = pydicom.dcmread(path)
        ds.compress(ts)
        out = tmp_path / f"{ts.keyword}.dcm"
        ds.save_as(out)
        run = read_xa(out)
        assert np.array_equal(run.frames, frames.astype(np.float32)) and run.primary_deg.tolist() == [0.0, 2.0]
    ds = pydicom.dcmread(tmp_path / "JPEG2000Lossless.dcm")
    from pydicom.encaps import encapsulate, generate_frames

    broken = [f[: len(f) // 3] for f in generate_frames(ds.PixelData, number_of_frames=2)]
    ds.PixelData = encapsulate(broken)
    ds.save_as(tmp_path / "broken.dcm")
    with pytest.raises(BadInput, match="pixel data cannot be decoded"):
        read_xa(tmp_path / "broken.dcm")


def test_two_single_frame_views_stack_into_one_geometry(tmp_path):
    from angiorecon.formats.xa_study import stack_views

    img = np.ones((20, 18), np.uint16)
    for name, a, b in (("v1.dcm", -30.0, 20.0), ("v2.dcm", 45.0, -15.0)):
        write_xa(tmp_path / name, img, primary_deg=a, secondary_deg=b, sid=SID, sod=SOD, pixel_spacing=SPACING)
    runs = load_study([tmp_path / "v1.dcm", tmp_path / "v2.dcm"]).runs
    frames, geom = stack_views(runs)
    hand = ConeBeamGeometry.from_xa_angles([-30.0, 45.0], [20.0, -15.0], SID, SOD, SPACING, (20, 18))
    assert frames.shape == (2, 20, 18)
    np.testing.assert_allclose(geom.projection_matrices(), hand.projection_matrices(), atol=1e-12)
    reverse = load_study([tmp_path / "v2.dcm", tmp_path / "v1.dcm"]).runs      # explicit files keep their order
    assert [r.primary_deg[0] for r in reverse] == [45.0, -30.0]


def test_enhanced_per_frame_display_shutter(tmp_path):
    path = _enhanced(tmp_path, [1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    ds = pydicom.dcmread(path)
    shutter = Dataset()
    shutter.ShutterShape = "RECTANGULAR"
    shutter.ShutterLeftVerticalEdge, shutter.ShutterRightVerticalEdge = 2, 7
    shutter.ShutterUpperHorizontalEdge, shutter.ShutterLowerHorizontalEdge = 3, 10
    ds.PerFrameFunctionalGroupsSequence[1].FrameDisplayShutterSequence = DicomSequence([shutter])
    ds.save_as(path)
    mask = read_xa(path).valid_mask
    assert mask[0].all() and mask[2].all()
    assert mask[1].sum() == 8 * 6 and mask[1, 2:10, 1:7].all()


def test_write_xa_study_reads_back_as_a_pair_or_a_subtracted_run(tmp_path):
    from angiorecon.formats.xa_study import write_xa_study

    g = ConeBeamGeometry.circular(np.deg2rad([0.0, 40.0, 80.0]), 750.0, 1150.0, (10, 12), 0.5)
    li = np.zeros((3, 10, 12))
    li[:, 4:6, 3:9] = 0.6
    mask = np.full(li.shape, 3000.0)
    write_xa_study(tmp_path / "pair", g, mask=mask, fill=mask * np.exp(-li))
    sig = select_dsa(load_study([tmp_path / "pair"]).runs)
    assert "series description" in sig.how
    np.testing.assert_allclose(sig.line_integrals[:, :, ::-1], li, atol=1e-3)      # DICOM columns are mirrored
    write_xa_study(tmp_path / "sub", g, line_integrals=li)
    sig = select_dsa(load_study([tmp_path / "sub"]).runs)
    assert sig.subtracted_run is not None
    np.testing.assert_allclose(sig.line_integrals[:, :, ::-1], li, atol=1e-4)


def test_unmodelled_detector_tilt_and_fov_flip_are_reported(tmp_path):
    path = _run(tmp_path, n=2)
    ds = pydicom.dcmread(path)
    ds.DetectorPrimaryAngle = 3.0
    ds.FieldOfViewHorizontalFlip = "YES"
    ds.save_as(path)
    warnings = read_xa(path).warnings
    assert any("DetectorPrimaryAngle" in w for w in warnings) and any("HorizontalFlip" in w for w in warnings)


def test_integer_valued_float_counts_are_stored_exactly(tmp_path):
    counts = np.random.default_rng(9).poisson(3000.0, (3, 8, 8)).astype(np.float32)
    path = _run(tmp_path, "counts.dcm", n=3, h=8, w=8, frames=counts)
    assert "RealWorldValueMappingSequence" not in pydicom.dcmread(path)
    assert np.array_equal(read_xa(path).frames, counts)
