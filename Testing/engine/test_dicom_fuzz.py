"""Property-based robustness: mutated XA files give a result or BadInput/OutOfMemory, never anything else.

Mutations of small valid files (legacy multi-frame 4×16×16, single-frame, Enhanced XA): dropped tags,
changed VRs, garbage values, wrong frame counts, truncated files and flipped bytes, alone or combined.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence

from angiorecon.errors import BadInput, OutOfMemory
from angiorecon.formats.dicom_xa import read_xa, write_xa
from angiorecon.formats.xa_study import load_study, select_dsa

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _valid_files() -> dict[str, bytes]:
    from test_dicom_xa import _enhanced  # same folder; the Enhanced XA builder used by the reader tests

    out = {}
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        write_xa(Path(d) / "multi.dcm", rng.uniform(10, 1000, (4, 16, 16)).astype(np.float32),
                 primary_deg=[-10.0, -7.5, -5.0, -2.5], secondary_deg=[0.0, 1.0, 2.0, 3.0], sid=1100.0, sod=750.0,
                 pixel_spacing=(0.3, 0.3), times_s=[0, 0.03, 0.07, 0.1], shutter_rect=(2, 15, 2, 15))
        write_xa(Path(d) / "single.dcm", rng.integers(0, 4000, (16, 16)).astype(np.uint16), primary_deg=30.0,
                 secondary_deg=-20.0, sid=1100.0, sod=750.0, pixel_spacing=(0.3, 0.3), shutter_circle=(8, 8, 6))
        _enhanced(Path(d), [1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
        for name in ("multi.dcm", "single.dcm", "enhanced.dcm"):
            out[name] = (Path(d) / name).read_bytes()
    return out


VALID = _valid_files()
GARBAGE_VALUES = ["", "abc", "-1", "0", "1e400", "nan", "inf", "3\\4\\5", "999999999", "2.5", "\x00\xff", "-0"]
VRS = ["OB", "UN", "US", "SS", "FD", "FL", "LO", "CS", "DS", "IS", "AT", "SQ", "UL"]


def _dataset(blob: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(blob))


def _save(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _value_for(vr: str, draw) -> object:
    if vr in ("OB", "UN"):
        return draw(st.binary(max_size=16))
    if vr in ("US", "SS", "UL"):
        return draw(st.integers(0, 65535 if vr != "SS" else 32767))
    if vr in ("FD", "FL"):
        return draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
    if vr == "AT":
        return draw(st.integers(0, 0xFFFFFFFF))
    if vr == "SQ":
        return DicomSequence([])
    return draw(st.sampled_from(GARBAGE_VALUES)).replace("\x00\xff", "??")


@st.composite
def mutated_file(draw) -> bytes:
    name = draw(st.sampled_from(sorted(VALID)))
    blob = VALID[name]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "vr", "value", "frames", "truncate", "flip", "nested"]))
        if kind in ("truncate", "flip"):
            if kind == "truncate":
                blob = blob[: draw(st.integers(0, max(0, len(blob) - 1)))]
            else:
                arr = bytearray(blob)
                for _ in range(draw(st.integers(1, 8))):
                    if arr:
                        arr[draw(st.integers(0, len(arr) - 1))] = draw(st.integers(0, 255))
                blob = bytes(arr)
            continue
        try:
            ds = _dataset(blob)
            tags = [e.tag for e in ds if e.tag != 0x7FE00010]
        except Exception:  # noqa: BLE001 - an earlier mutation made it unparseable; keep the bytes
            continue
        if not tags:
            continue
        tag = draw(st.sampled_from(tags))
        try:
            _mutate(ds, tag, kind, draw)
        except Exception:  # noqa: BLE001 - pydicom refuses the value in memory: put its bytes in as UN
            t = 0x00280008 if kind == "frames" else tag
            try:
                ds[t] = DataElement(t, "UN", draw(st.sampled_from(GARBAGE_VALUES)).encode("latin-1"))
            except Exception:  # noqa: BLE001 - not even as UN (e.g. a sequence tag): skip this mutation
                continue
        try:
            blob = _save(ds)
        except Exception:  # noqa: BLE001 - pydicom cannot write this mutation; keep the previous bytes
            continue
    return blob


def _mutate(ds: pydicom.Dataset, tag: int, kind: str, draw) -> None:
    if kind == "drop":
        del ds[tag]
    elif kind == "vr":
        vr = draw(st.sampled_from(VRS))
        ds[tag] = DataElement(tag, vr, _value_for(vr, draw))
    elif kind == "value":
        ds[tag] = DataElement(tag, "LO" if ds[tag].VR == "SQ" else ds[tag].VR,
                              draw(st.sampled_from(GARBAGE_VALUES)).replace("\x00\xff", "??"))
    elif kind == "frames":
        ds.NumberOfFrames = draw(st.sampled_from(["0", "-3", "1", "3", "5", "100000", "abc", "2.5", ""]))
    elif kind == "nested":
        seqs = [e for e in ds if e.VR == "SQ" and len(e.value)]
        if seqs:
            item = draw(st.sampled_from(seqs)).value[0]
            inner = [e.tag for e in item]
            if inner:
                t = draw(st.sampled_from(inner))
                if draw(st.booleans()):
                    del item[t]
                else:
                    item[t] = DataElement(t, "LO", draw(st.sampled_from(GARBAGE_VALUES)).replace("\x00\xff", "??"))


def _check_run(run) -> None:
    n, h, w = run.frames.shape
    assert run.frames.dtype == np.float32 and np.all(np.isfinite(run.frames))
    assert run.geometry.n_views == n and run.geometry.det_shape == (h, w)
    assert run.valid_mask.shape == (n, h, w)
    assert run.times_s.shape == (n,) and np.all(np.isfinite(run.times_s))
    assert np.all(np.isfinite(run.geometry.projection_matrices()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blob=mutated_file())
def test_mutated_files_only_raise_documented_errors(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.dcm"
        path.write_bytes(blob)
        try:
            run = read_xa(path)
        except (BadInput, OutOfMemory) as exc:
            msg = str(exc)
            assert msg and "\n" not in msg and len(msg) < 600
            return
        _check_run(run)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blob=mutated_file())
def test_mutated_study_only_raises_documented_errors(blob: bytes) -> None:
    """The study layer (folder scan, pairing, DSA) next to one valid run."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "a.dcm").write_bytes(blob)
        Path(d, "b.dcm").write_bytes(VALID["multi.dcm"])
        try:
            study = load_study([d])
            sig = select_dsa(study.runs)
        except (BadInput, OutOfMemory) as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert np.all(np.isfinite(sig.line_integrals)) and sig.line_integrals.min() >= 0


@pytest.mark.parametrize("name", sorted(VALID))
def test_unmutated_bases_read(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(VALID[name])
    _check_run(read_xa(tmp_path / name))
