"""4D volume sequences round-trip with their LPS geometry and index values."""

from __future__ import annotations

import numpy as np

from angiorecon.formats.sequence import read_volume_sequence, write_volume_sequence
from angiorecon.geometry import VolumeGrid


def test_sequence_round_trip(tmp_path):
    aff = np.array([[0.0, -1.5, 0, 10], [1.2, 0, 0, -5], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    grid = VolumeGrid((4, 5, 6), aff)
    frames = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)
    p = write_volume_sequence(tmp_path / "fill.seq.nrrd", frames, grid, [0.0, 0.5, 1.25])
    got, g2, idx = read_volume_sequence(p)
    np.testing.assert_array_equal(got, frames)
    np.testing.assert_allclose(g2.affine, aff)
    np.testing.assert_allclose(idx, [0.0, 0.5, 1.25])
    text = p.read_bytes().split(b"\n\n")[0].decode()
    assert "kinds: domain domain domain list" in text and "axis 3 index type:=numeric" in text
