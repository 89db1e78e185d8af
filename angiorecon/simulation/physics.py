"""X-ray physics of a DSA acquisition: attenuation, iodine, Beer–Lambert counts, noise, blur, motion, display.

Monochromatic model at an effective energy ``E_eff`` (keV). Everything is in millimetres: linear
attenuation coefficients are in 1/mm and line integrals are dimensionless (``∫μ dl``).

* CT → attenuation: ``μ = μ_water(E)·(1 + HU/1000)`` clipped at 0, so air (−1000 HU) → 0 and water →
  μ_water. (Bone's stronger energy dependence is ignored: one effective energy, no beam hardening.)
* Iodine: ``μ_I = (μ/ρ)_I(E)·c`` with ``c`` in mg/ml = 1e-3 g/cm³, so
  ``μ_I [1/mm] = 0.1 · (μ/ρ)[cm²/g] · c[mg/ml] · 1e-3``.
* Mask run ``I_m = I0·exp(−p_mask)``; fill run ``I_f = I0·exp(−p_mask − p_I)``; DSA
  ``= ln I_m − ln I_f = p_I`` (clipped ≥ 0), the architecture's DSA signal.
* Quantum noise: counts ``N ~ Poisson(I0·e^{−p})``; by the delta method ``var(−ln N) ≈ 1/(I0·e^{−p})``.

Mass attenuation coefficients (total with coherent scattering, cm²/g) are NIST XCOM values
as tabulated in Hubbell & Seltzer, NISTIR 5632 / NIST Standard Reference Database 126
(https://www.nist.gov/pml/x-ray-mass-attenuation-coefficients), Table 3 (iodine, Z = 53) and
Table 4 (water, liquid), read from the tables at their energy grid points; values between grid
points are interpolated log–log, and the iodine K edge (33.17 keV) is kept as a discontinuity.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry

# energy (keV), μ/ρ (cm²/g). The repeated 33.1694 keV row is the K edge (below / above).
_WATER = np.array([
    [20.0, 0.8096], [30.0, 0.3756], [40.0, 0.2683], [50.0, 0.2269], [60.0, 0.2059],
    [80.0, 0.1837], [100.0, 0.1707], [150.0, 0.1505],
])
_IODINE = np.array([
    [20.0, 25.39], [30.0, 8.552], [33.1694, 6.551], [33.1694, 36.33], [40.0, 22.10],
    [50.0, 12.32], [60.0, 7.614], [80.0, 3.601], [100.0, 1.942], [150.0, 0.6978],
])

#: Blood/soft tissue HU used to replace contrast-enhanced lumen when making a native mask CT.
BLOOD_HU = 40.0


def _loglog(table: np.ndarray, energy_kev: float) -> float:
    e = float(energy_kev)
    if not table[0, 0] <= e <= table[-1, 0]:
        raise BadInput(f"effective energy {e:g} keV outside the tabulated range "
                       f"{table[0, 0]:g}–{table[-1, 0]:g} keV")
    # above-edge row wins at the edge itself: searchsorted 'right' picks the last equal energy
    i = int(np.clip(np.searchsorted(table[:, 0], e, side="right") - 1, 0, len(table) - 2))
    (e0, m0), (e1, m1) = table[i], table[i + 1]
    if e1 == e0:
        return float(m1)
    w = (np.log(e) - np.log(e0)) / (np.log(e1) - np.log(e0))
    return float(np.exp(np.log(m0) + w * (np.log(m1) - np.log(m0))))


def mass_attenuation(material: str, energy_kev: float) -> float:
    """μ/ρ in cm²/g of ``"water"`` or ``"iodine"`` at ``energy_kev`` (NIST XCOM, log–log interpolated)."""
    tables = {"water": _WATER, "iodine": _IODINE}
    if material not in tables:
        raise BadInput(f"unknown material {material!r}; known: {', '.join(tables)}")
    return _loglog(tables[material], energy_kev)


def mu_water(energy_kev: float = 60.0) -> float:
    """Linear attenuation of water in 1/mm (density 1 g/cm³)."""
    return 0.1 * mass_attenuation("water", energy_kev)


def iodine_mu_per_mg_ml(energy_kev: float = 60.0) -> float:
    """Linear attenuation in 1/mm contributed by 1 mg/ml of iodine."""
    return 0.1 * mass_attenuation("iodine", energy_kev) * 1e-3


def hu_to_mu(hu: np.ndarray, energy_kev: float = 60.0) -> np.ndarray:
    """HU → linear attenuation (1/mm, float32) at the effective energy; air and below → 0."""
    mw = mu_water(energy_kev)
    return np.maximum(mw * (1.0 + np.asarray(hu, dtype=np.float32) / 1000.0), 0.0).astype(np.float32)


def remove_contrast(hu: np.ndarray, lumen_fraction: np.ndarray, blood_hu: float = BLOOD_HU) -> np.ndarray:
    """Native (un-enhanced) CT: blend the lumen toward blood HU by its fractional occupancy.

    A CT angiogram already has iodine in its arteries; the mask run of a DSA must not, so the lumen
    is replaced before projecting (partial-volume voxels are blended, not thresholded).
    """
    f = np.clip(np.asarray(lumen_fraction, dtype=np.float32), 0.0, 1.0)
    h = np.asarray(hu, dtype=np.float32)
    return np.where(f > 0, (1 - f) * h + f * np.minimum(h, blood_hu), h).astype(np.float32)


def intensity(line_integral: np.ndarray, i0: float) -> np.ndarray:
    """Beer–Lambert expected counts ``I0·exp(−p)`` (float64 to keep low counts exact)."""
    return float(i0) * np.exp(-np.asarray(line_integral, dtype=np.float64))


def gaussian_blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Detector/focal-spot blur: isotropic Gaussian PSF on each frame (last two axes) only."""
    if sigma_px <= 0:
        return np.asarray(images)
    from scipy.ndimage import gaussian_filter

    a = np.asarray(images)
    sig = (0,) * (a.ndim - 2) + (sigma_px, sigma_px)
    return gaussian_filter(a, sig, mode="nearest")


def noisy_counts(expected: np.ndarray, rng: np.random.Generator, electronic_sigma: float = 0.0,
                 correlation_sigma_px: float = 0.0) -> np.ndarray:
    """Poisson quantum noise (+ optional Gaussian electronic noise and noise-correlating PSF).

    The correlation blur acts on the noisy counts (the scintillator spreads each absorbed quantum),
    so it lowers the noise variance and gives it a texture, as real flat panels do.
    """
    n = rng.poisson(np.asarray(expected, dtype=np.float64)).astype(np.float64)
    if electronic_sigma > 0:
        n += rng.normal(0.0, electronic_sigma, size=n.shape)
    if correlation_sigma_px > 0:
        n = gaussian_blur(n, correlation_sigma_px)
    return n


def counts_to_line_integral(counts: np.ndarray, i0: float) -> np.ndarray:
    """``−ln(N/I0)`` with counts below one photon clamped to one (no infinities)."""
    return (-np.log(np.maximum(np.asarray(counts, dtype=np.float64), 1.0) / float(i0))).astype(np.float32)


def scatter(primary: np.ndarray, fraction: float, sigma_px: float) -> np.ndarray:
    """Smooth scatter background: ``fraction`` × the primary, spread by a wide Gaussian (per frame).

    A scatter-to-primary ratio of 0.2–1 is typical of body angiography without a grid; scatter is
    low-frequency, so a wide kernel (tens of pixels) is the usual first-order model. Scatter adds
    photons that carry no iodine signal: it lowers DSA contrast (ln((I_m+S)/(I_f+S)) < p_I).
    """
    if fraction <= 0:
        return np.zeros_like(np.asarray(primary, dtype=np.float64))
    return fraction * gaussian_blur(np.asarray(primary, dtype=np.float64), sigma_px)


def acquire(line_integral: np.ndarray, i0: float, rng: np.random.Generator | None, *,
            blur_sigma_px: float = 0.0, electronic_sigma: float = 0.0,
            correlation_sigma_px: float = 0.0, scatter_fraction: float = 0.0,
            scatter_sigma_px: float = 32.0) -> np.ndarray:
    """Detected counts for line integrals ``p``: Beer–Lambert (+ scatter), signal blur, then noise (if ``rng``)."""
    primary = intensity(line_integral, i0)
    expected = gaussian_blur(primary + scatter(primary, scatter_fraction, scatter_sigma_px), blur_sigma_px)
    if rng is None:
        return expected
    return noisy_counts(expected, rng, electronic_sigma, correlation_sigma_px)


def dsa(mask_counts: np.ndarray, fill_counts: np.ndarray) -> np.ndarray:
    """DSA line integrals ``ln(mask) − ln(fill)`` clipped at 0 (counts clamped to ≥ 1)."""
    m = np.log(np.maximum(np.asarray(mask_counts, dtype=np.float64), 1.0))
    f = np.log(np.maximum(np.asarray(fill_counts, dtype=np.float64), 1.0))
    return np.maximum(m - f, 0.0).astype(np.float32)


def rigid_matrix(rotation_deg: tuple[float, float, float], translation_mm: tuple[float, float, float],
                 center: np.ndarray | None = None) -> np.ndarray:
    """4×4 rigid transform: rotations about x, y, z (degrees, applied x then y then z) about ``center``."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, dtype=np.float64)
    return m


def move_patient(geometry: ConeBeamGeometry, motion: np.ndarray) -> ConeBeamGeometry:
    """Geometry seeing the patient moved by the rigid ``motion`` (4×4, world → world).

    Moving the object by T is the same as moving source and detector by T⁻¹, so motion between the
    mask and fill runs needs no resampling of the CT (no interpolation blur in the simulation).
    """
    inv = np.linalg.inv(np.asarray(motion, dtype=np.float64))
    r, t = inv[:3, :3], inv[:3, 3]
    return ConeBeamGeometry(geometry.source @ r.T + t, geometry.det_center @ r.T + t,
                            geometry.det_u @ r.T, geometry.det_v @ r.T, geometry.det_shape,
                            geometry.times, dict(geometry.meta, patient_motion=np.asarray(motion).tolist()))


def random_motion(rng: np.random.Generator, max_rotation_deg: float, max_translation_mm: float,
                  center: np.ndarray | None = None) -> np.ndarray:
    """Small random rigid patient motion (uniform within the given bounds per axis)."""
    rot = rng.uniform(-max_rotation_deg, max_rotation_deg, 3)
    tr = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    return rigid_matrix(tuple(rot), tuple(tr), center)


def display_transform(counts: np.ndarray, i0: float, kind: str = "log", bits: int = 12,
                      gamma: float = 1.0, p_range: tuple[float, float] = (0.0, 8.0)) -> np.ndarray:
    """Vendor-like stored pixel values from counts (what a DICOM XA frame holds).

    ``log``: pixel = (2^bits − 1)·(1 − (p − p_lo)/(p_hi − p_lo)) with ``p = −ln(N/I0)`` (bright =
    less attenuation, as XA frames are usually stored), optionally shaped by ``gamma``;
    ``linear``: counts scaled to the bit depth (no log), for raw-domain exports.
    Returns uint16. The inverse is only approximate after rounding — the reason anchors that use
    display frames get "approximate line integrals".
    """
    top = 2 ** int(bits) - 1
    if kind == "log":
        p = -np.log(np.maximum(np.asarray(counts, dtype=np.float64), 1.0) / float(i0))
        x = 1.0 - np.clip((p - p_range[0]) / (p_range[1] - p_range[0]), 0.0, 1.0)
    elif kind == "linear":
        x = np.clip(np.asarray(counts, dtype=np.float64) / float(i0), 0.0, 1.0)
    else:
        raise BadInput(f"unknown display transform {kind!r}; use 'log' or 'linear'")
    if gamma != 1.0:
        x = x ** (1.0 / gamma)
    return np.round(top * x).astype(np.uint16)


def inverse_display_log(pixels: np.ndarray, bits: int = 12, gamma: float = 1.0,
                        p_range: tuple[float, float] = (0.0, 8.0)) -> np.ndarray:
    """Line integrals back from ``display_transform(kind="log")`` pixels (up to rounding)."""
    x = np.asarray(pixels, dtype=np.float64) / (2 ** int(bits) - 1)
    if gamma != 1.0:
        x = x ** gamma
    return (p_range[0] + (1.0 - x) * (p_range[1] - p_range[0])).astype(np.float32)

