"""FDK for circular-ish C-arm runs: cosine weight, Parker short-scan weight, ramp filter, voxel back-projection.

The geometry is arbitrary per view, so the orbit is *estimated* from it: the rotation centre is the
point closest to all central rays, the axis is the normal of the source plane, and each view gets
its gantry angle ``β``, source radius ``R`` and angular share ``Δβ``. With the detector-frame ramp
filter (pixel pitch ``|u|`` at the detector, distance ``D`` source→detector), the reconstruction is

    f(x) = Σ_views  ω · Δβ · R / (D · w(x)²) · q(col(x), row(x))

where ``(col, row, w)`` come from the view's 3×4 projection matrix (``w`` = depth / D), ``q`` is
the filtered, cosine-weighted projection and ``ω`` is 1/2 for a full turn (every line is seen
twice) or Parker's weight for a short scan (applied to the projections before filtering; it sums
to 1 over each pair of redundant rays). For an ideal circular orbit this is the textbook FDK.
The filter runs along the detector axis closest to the orbit tangent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft

from ..errors import BadInput, check_memory
from ..geometry import ConeBeamGeometry, VolumeGrid

FILTERS = ("ram-lak", "shepp-logan", "hann")


@dataclass(frozen=True)
class Orbit:
    """Circular-orbit description estimated from per-view geometry."""

    center: np.ndarray      #: (3,) rotation centre (point closest to all central rays)
    axis: np.ndarray        #: (3,) unit rotation axis, oriented so that β increases with the views
    beta: np.ndarray        #: (N,) unwrapped gantry angle of each view (rad)
    radius: np.ndarray      #: (N,) source distance to the axis (mm)
    dbeta: np.ndarray       #: (N,) angular share of each view (rad)
    span: float             #: angle between the first and the last source position (rad)
    coverage: float         #: angular range covered (rad): span plus one view's share
    short_scan: bool        #: whether the views cover less than a full turn


def estimate_orbit(geometry: ConeBeamGeometry, short_scan: bool | None = None) -> Orbit:
    """Rotation centre/axis, gantry angles and angular weights of a circular-ish run."""
    src, normal = geometry.source, geometry.det_normal
    n = geometry.n_views
    # centre: least-squares point closest to the central rays  src + λ·normal
    proj = np.eye(3)[None] - normal[:, :, None] * normal[:, None, :]
    a, b = proj.sum(axis=0), np.einsum("nij,nj->i", proj, src)
    center = np.linalg.lstsq(a, b, rcond=None)[0] if n > 1 else src[0] + normal[0] * np.linalg.norm(src[0])
    rel = src - center
    if n >= 2 and np.linalg.matrix_rank(rel, tol=1e-6 * np.abs(rel).max()) >= 2:
        axis = np.linalg.svd(rel, full_matrices=True)[2][-1]
    else:  # a single view (or collinear sources): the detector's v axis is the rotation axis of a C-arm
        axis = geometry.det_v[0] / np.linalg.norm(geometry.det_v[0])
    e1 = rel[0] - (rel[0] @ axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    beta = np.unwrap(np.arctan2(rel @ e2, rel @ e1))
    if n > 1 and np.median(np.diff(beta)) < 0:  # orient the axis so that β increases with the views
        axis, e2, beta = -axis, -e2, -beta
    radius = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    order = np.argsort(beta)
    sb = beta[order]
    gaps = np.diff(sb)
    step = float(np.median(gaps)) if n > 1 else 2 * np.pi
    coverage = float(sb[-1] - sb[0] + step)
    if short_scan is None:
        short_scan = coverage < 2 * np.pi - 0.5 * step
    dbeta_sorted = np.empty(n)
    if n == 1:
        dbeta_sorted[:] = 2 * np.pi if not short_scan else np.pi
    elif short_scan:
        dbeta_sorted[1:-1] = (sb[2:] - sb[:-2]) / 2
        dbeta_sorted[0], dbeta_sorted[-1] = gaps[0], gaps[-1]
    else:
        ext = np.concatenate([[sb[-1] - 2 * np.pi], sb, [sb[0] + 2 * np.pi]])
        dbeta_sorted = (ext[2:] - ext[:-2]) / 2
    dbeta = np.empty(n)
    dbeta[order] = dbeta_sorted
    return Orbit(center, axis, beta, radius, dbeta, float(sb[-1] - sb[0]), coverage, bool(short_scan))


def parker_weights(beta: np.ndarray, gamma: np.ndarray, scan_range: float) -> np.ndarray:
    """Parker (1982) weights ``w(β, γ)`` for ``β`` ∈ [0, range] and fan angles ``γ`` (generalised:
    δ = (range − π)/2 instead of the half fan angle, so over-scans are weighted smoothly)."""
    delta = max((scan_range - np.pi) / 2, 1e-6)
    b, g = np.broadcast_arrays(np.asarray(beta, float)[:, None], np.asarray(gamma, float)[None, :])
    w = np.ones_like(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.sin(np.pi / 4 * np.clip(b / (delta - g), 0, 2)) ** 2
        fall = np.sin(np.pi / 4 * np.clip((np.pi + 2 * delta - b) / (delta + g), 0, 2)) ** 2
    w = np.where(b < 2 * (delta - g), rise, w)
    w = np.where(b > np.pi - 2 * g, fall, w)
    w = np.where((b < 0) | (b > np.pi + 2 * delta), 0.0, w)
    return np.nan_to_num(w, nan=0.0)


def ramp_response(n_cols: int, pitch: float, filter: str) -> tuple[np.ndarray, int]:
    """Frequency response (rfft of the padded length) of the windowed ramp, incl. the ``pitch`` factor.

    Built from the band-limited spatial ramp (Kak & Slaney eq. 61), which has no DC error, then
    multiplied by the window.
    """
    if filter not in FILTERS:
        raise BadInput(f"unknown FDK filter {filter!r}; expected one of {', '.join(FILTERS)}")
    n_pad = scipy.fft.next_fast_len(2 * n_cols, real=True)
    k = np.arange(n_pad)
    k = np.where(k > n_pad // 2, k - n_pad, k)
    h = np.zeros(n_pad)
    h[0] = 1.0 / (4 * pitch ** 2)
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi ** 2 * k[odd].astype(float) ** 2 * pitch ** 2)
    resp = np.real(scipy.fft.rfft(h)) * pitch
    f = np.arange(resp.size) / n_pad          # cycles per sample, Nyquist = 0.5
    if filter == "shepp-logan":
        resp *= np.sinc(f)
    elif filter == "hann":
        resp *= 0.5 * (1 + np.cos(2 * np.pi * f))
    return resp, n_pad


@numba.njit(parallel=True, fastmath=True, cache=True)
def _backproject_voxels(q, mats, scale, nx, ny, nz, out):
    """out[z, y, x] += Σ_n scale[n] / w² · bilinear(q[n], col, row); q is zero-padded by one pixel."""
    n_views, hp, wp = q.shape
    h = hp - 2
    w = wp - 2
    for line in numba.prange(nz * ny):
        z = line // ny
        y = line - z * ny
        for n in range(n_views):
            u0 = mats[n, 0, 1] * y + mats[n, 0, 2] * z + mats[n, 0, 3]
            v0 = mats[n, 1, 1] * y + mats[n, 1, 2] * z + mats[n, 1, 3]
            w0 = mats[n, 2, 1] * y + mats[n, 2, 2] * z + mats[n, 2, 3]
            du, dv, dw = mats[n, 0, 0], mats[n, 1, 0], mats[n, 2, 0]
            s = scale[n]
            for x in range(nx):
                ww = w0 + x * dw
                if ww <= 0.0:
                    continue
                inv = 1.0 / ww
                u = (u0 + x * du) * inv
                v = (v0 + x * dv) * inv
                if u > -1.0 and u < w and v > -1.0 and v < h:
                    iu = int(math.floor(u))
                    iv = int(math.floor(v))
                    fu = u - iu
                    fv = v - iv
                    val = ((1.0 - fv) * ((1.0 - fu) * q[n, iv + 1, iu + 1] + fu * q[n, iv + 1, iu + 2])
                           + fv * ((1.0 - fu) * q[n, iv + 2, iu + 1] + fu * q[n, iv + 2, iu + 2]))
                    out[z, y, x] += s * inv * inv * val


def fdk_filter(projections: np.ndarray, geometry: ConeBeamGeometry, orbit: Orbit, filter: str = "ram-lak") -> np.ndarray:
    """Cosine- and (short scan) Parker-weighted, ramp-filtered projections ``[N, H, W]`` float32."""
    n, (h, w) = geometry.n_views, geometry.det_shape
    p = np.asarray(projections, dtype=np.float32)
    if p.shape != (n, h, w):
        raise BadInput(f"projections shape {p.shape} does not match the geometry ({n}, {h}, {w})")
    pitch_rc = geometry.pixel_spacing                       # (N, 2) row, col pitch
    normal, sid = geometry.det_normal, geometry.sid
    pp = geometry.source + sid[:, None] * normal           # principal points (foot of the source)
    u_hat = geometry.det_u / pitch_rc[:, 1:2]
    v_hat = geometry.det_v / pitch_rc[:, 0:1]
    col_pp = np.einsum("ni,ni->n", pp - geometry.pixel00, u_hat) / pitch_rc[:, 1]
    row_pp = np.einsum("ni,ni->n", pp - geometry.pixel00, v_hat) / pitch_rc[:, 0]
    rel = geometry.source - orbit.center
    tangent = np.cross(orbit.axis, rel)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    along_u = np.abs(np.einsum("ni,ni->n", u_hat, tangent)).mean() >= np.abs(np.einsum("ni,ni->n", v_hat, tangent)).mean()
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        s = (np.arange(w) - col_pp[i]) * pitch_rc[i, 1]
        t = (np.arange(h) - row_pp[i]) * pitch_rc[i, 0]
        img = p[i] * (sid[i] / np.sqrt(sid[i] ** 2 + s[None, :] ** 2 + t[:, None] ** 2))
        if not along_u:
            img, s = img.T, t
        fan_sign = np.sign(np.dot(u_hat[i] if along_u else v_hat[i], tangent[i])) or 1.0
        if orbit.short_scan:
            gamma = np.arctan(-fan_sign * s / sid[i])
            img = img * parker_weights(np.array([orbit.beta[i] - orbit.beta.min()]), gamma, orbit.span)[0][None, :]
        pitch = pitch_rc[i, 1] if along_u else pitch_rc[i, 0]
        resp, n_pad = ramp_response(img.shape[1], pitch, filter)
        spec = scipy.fft.rfft(img, n=n_pad, axis=1) * resp[None, :]
        filt = scipy.fft.irfft(spec, n=n_pad, axis=1)[:, : img.shape[1]]
        out[i] = filt.T if not along_u else filt
    return out


def fdk(projections: np.ndarray, grid: VolumeGrid, geometry: ConeBeamGeometry, *, filter: str = "ram-lak",
        short_scan: bool | None = None, progress=None) -> np.ndarray:
    """FDK reconstruction ``volume[z, y, x]`` (float32) of line integrals ``[N, H, W]`` on ``grid``.

    ``short_scan=None`` detects a short scan from the angular coverage and then applies Parker
    weights; ``progress(fraction, message)`` is called after filtering and per block of views.
    """
    orbit = estimate_orbit(geometry, short_scan)
    nz, ny, nx = grid.shape
    n, (h, w) = geometry.n_views, geometry.det_shape
    check_memory(nz * ny * nx * 4 + 2 * n * (h + 2) * (w + 2) * 4, "FDK reconstruction")
    q = np.zeros((n, h + 2, w + 2), np.float32)
    q[:, 1:-1, 1:-1] = fdk_filter(projections, geometry, orbit, filter)
    if progress is not None:
        progress(0.1, "filtered")
    omega = 1.0 if orbit.short_scan else 0.5
    scale = omega * orbit.dbeta * orbit.radius / geometry.sid
    mats = np.ascontiguousarray(geometry.projection_matrices() @ grid.affine)
    out = np.zeros(grid.shape, np.float32)
    block = max(1, min(n, 8))
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        _backproject_voxels(q[lo:hi], mats[lo:hi], scale[lo:hi], nx, ny, nz, out)
        if progress is not None:
            progress(0.1 + 0.9 * hi / n, f"back-projected {hi}/{n} views")
    return out
