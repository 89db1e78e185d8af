"""The one intensity domain of the deep-DSA network, stored in every checkpoint.

The anchor trained with global mask-pixel statistics and tested with per-stack self-normalisation
(``synthetic_dsa.md`` §1.7, "better system" item 9). Here training and inference use the same
definition, per frame:

* the physical quantity is the **line integral** ``p = −ln(I/I₀)`` (bright = more attenuation), which
  is what the simulator writes (fill = mask + iodine) and what DSA subtracts;
* display images (PNG/TIFF/DICOM XA pixel values ``v``, vessels dark) are mapped with
  ``p = −ln((v + ½)/(v_max + 1))`` (MONOCHROME1 is inverted first); the training augmentation also
  shows the network frames displayed linearly in transmission, so log- and linear-LUT displays both
  fit;
* the network sees ``x = (p − median(p)) / s`` with ``s = P99(p) − P1(p)`` over the **whole frame**
  (tiles share their frame's statistics) and predicts ``y = G · DSA / s`` with the fixed gain
  ``G = 10`` (keeps the thin-vessel targets of order one); the DSA in line-integral units is
  ``s · y / G`` clipped at 0.
"""

from __future__ import annotations

import numpy as np

DOMAIN: dict[str, str] = {
    "name": "line-integral/per-frame-robust/v1",
    "physical_input": "line integral p = -ln(I/I0) of the fill (contrast) frame; bright = more attenuation",
    "network_input": "x = (p - median(p)) / s with s = P99(p) - P1(p) over the whole frame",
    "network_output": "y = 10 * DSA / s; DSA = max(s * y / 10, 0) in line-integral units (log(mask) - log(fill))",
    "target_gain": "10",
    "display_images": "PNG/TIFF/DICOM pixel value v (vessels dark; MONOCHROME1 inverted first): "
                      "p = -ln((v + 0.5) / (vmax + 1)), vmax = 2**bits - 1",
    "float_stacks": "NIfTI/NRRD/MHA float stacks are line integrals p (as written by the simulator)",
}

_EPS = 1e-6
TARGET_GAIN = 10.0  #: G in y = G·DSA/s


def frame_stats(p: np.ndarray) -> tuple[float, float]:
    """(centre, scale) of one frame: median and P99 − P1, the normalisation of :data:`DOMAIN`."""
    lo, med, hi = np.percentile(np.asarray(p, dtype=np.float64), [1.0, 50.0, 99.0])
    return float(med), float(max(hi - lo, _EPS))


def normalise(p: np.ndarray, stats: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Network input for one frame and the stats used (pass ``stats`` to reuse a frame's)."""
    centre, scale = stats if stats is not None else frame_stats(p)
    return ((np.asarray(p, dtype=np.float32) - centre) / scale).astype(np.float32), (centre, scale)


def intensity_to_line_integral(v: np.ndarray, vmax: float, invert: bool = False) -> np.ndarray:
    """Display pixel values (vessels dark) → line integrals ``−ln((v+½)/(vmax+1))``."""
    v = np.asarray(v, dtype=np.float64)
    if invert:
        v = vmax - v
    v = np.clip(v, 0.0, vmax)
    return (-np.log((v + 0.5) / (vmax + 1.0))).astype(np.float32)
