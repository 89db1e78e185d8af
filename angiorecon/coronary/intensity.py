"""Vessel line integrals: the cue binary masks lose, for telling two-view ghosts from true branches.

A mask is the *union* of the vessels a ray crosses; the log-domain image *adds* them (Beer–Lambert:
the contrast line integral is the summed lumen chord times the iodine attenuation). A two-view ghost
lying on a kept vessel in one view predicts twice the chord there, which the image does not show,
and a true vessel hidden behind another one explains a doubled chord that one vessel alone cannot.

Three parts, used by ``graph.select_branches``'s explanation search:

* :func:`vessel_line_integral` — the contrast line integral per view, estimated from the log-domain
  image by a morphological top-hat (image minus its grey opening with a disk wider than any vessel);
* :func:`piece_chords` — per candidate piece and view, its analytic lumen chord (mm) on each pixel;
* :class:`IntensityTerm` — the least-squares residual between the two, scaled per view by one
  fitted factor (iodine attenuation × concentration, unknown on real runs), with the closed-form
  changes of adding, removing or swapping pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix

from ..geometry import ConeBeamGeometry

#: the opening disk's diameter as a multiple of the widest vessel (mask skeleton), and its least size
OPENING_WIDTHS = 2.5
MIN_OPENING_PX = 15
#: a vessel nearly along a ray has a chord of its whole run there; cap 1/sin(angle to the ray)
MAX_SECANT = 4.0
#: samples × pixel offsets per chunk of the chord computation: bounded memory on wide, long trees
CHUNK_ELEMENTS = 2_000_000
#: weight of the residual against the explanation energy's pixels (benchmarks/coronary_quality.py,
#: paired with masks alone on 36 seeds: 0.25 and 0.5 gain the same Dice, 0.5 moved one case's
#: Chamfer from 7.7 to 10 mm; 3 and 10 lowered clDice on seeds 0–9)
DEFAULT_WEIGHT = 0.25


def vessel_line_integral(images: np.ndarray, half_width: np.ndarray, skeletons: list[np.ndarray]) -> np.ndarray:
    """[V, H, W] contrast line integral (image units) of log-domain ``images`` (vessels bright).

    Per view: the image minus its grey opening with a disk ``OPENING_WIDTHS`` times the widest vessel
    (twice the largest mask half width on the skeleton), so the opening keeps the smooth anatomy and
    drops every vessel. Negative values (noise) are clipped to 0.
    """
    out = np.zeros(images.shape, dtype=np.float32)
    for v, img in enumerate(np.asarray(images, dtype=np.float32)):
        sk = skeletons[v].astype(np.int64)
        widest = 2.0 * float(half_width[v][sk[:, 1], sk[:, 0]].max()) if len(sk) else 0.0
        r = max(MIN_OPENING_PX, int(np.ceil(OPENING_WIDTHS * widest))) // 2
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        out[v] = np.maximum(img - ndimage.grey_opening(img, footprint=xx ** 2 + yy ** 2 <= r * r), 0.0)
    return out


def piece_chords(points: list[np.ndarray], radii: np.ndarray, geometry: ConeBeamGeometry,
                 step: float = 0.5) -> list[csr_matrix]:
    """Per view, a sparse (pieces × H·W) matrix of each piece's lumen chord (mm) through every pixel.

    ``points``: per piece, (M, 3) world mm sampled every ``step`` mm; ``radii``: one radius (mm) per
    piece. A cylinder of radius r whose axis makes the angle θ with the ray has the chord
    2·√(r² − d²)/sin θ at the distance d (in mm at the vessel) from its axis; each pixel takes its
    nearest sample's chord (the sample whose stretch of the projected axis it faces).
    """
    h, w = geometry.det_shape
    lab = np.repeat(np.arange(len(points)), [len(p) for p in points])
    p = np.concatenate(points)
    r = np.asarray(radii, dtype=np.float64)[lab]
    t = np.concatenate([np.gradient(q, axis=0) if len(q) > 1 else np.tile([1.0, 0.0, 0.0], (len(q), 1))
                        for q in points])
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    uv_all, depth_all = geometry.project_points_with_depth(p)
    ahead = geometry.project_points(p + step * t)
    mats = []
    for v in range(geometry.n_views):
        uv, depth = uv_all[v], depth_all[v]
        e = ahead[v] - uv                                             # the axis's projected stretch
        e_len = np.linalg.norm(e, axis=1)
        e /= np.maximum(e_len, 1e-12)[:, None]
        ray = p - geometry.source[v]
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        secant = np.minimum(1.0 / np.maximum(np.linalg.norm(np.cross(t, ray), axis=1), 1e-6), MAX_SECANT)
        mm_per_px = float(geometry.pixel_spacing[v].min()) * depth
        reach = int(np.ceil((r / mm_per_px).max() + 1.5))
        oy, ox = (o.ravel() for o in np.mgrid[-reach:reach + 1, -reach:reach + 1])
        chunk = max(64, CHUNK_ELEMENTS // ox.size)                  # ~16 MB per temporary array
        rows, cols, vals = [], [], []
        for s in range(0, len(p), chunk):
            sl = slice(s, s + chunk)
            cx = np.rint(uv[sl, 0]).astype(np.int64)[:, None] + ox
            cy = np.rint(uv[sl, 1]).astype(np.int64)[:, None] + oy
            dx, dy = cx - uv[sl, 0:1], cy - uv[sl, 1:2]
            along = np.abs(dx * e[sl, 0:1] + dy * e[sl, 1:2])
            d = np.abs(dx * e[sl, 1:2] - dy * e[sl, 0:1]) * mm_per_px[sl, None]
            chord = 2.0 * np.sqrt(np.maximum(r[sl, None] ** 2 - d ** 2, 0.0)) * secant[sl, None]
            ok = ((chord > 0) & (along <= 0.5 * np.maximum(e_len[sl, None], 0.2) + 0.5)
                  & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h))
            rows.append(np.broadcast_to(lab[sl, None], ok.shape)[ok])
            cols.append((cy * w + cx)[ok])
            vals.append(chord[ok])
        key = np.concatenate(rows) * (h * w) + np.concatenate(cols)
        val = np.concatenate(vals)
        order = np.lexsort((-val, key))                              # per (piece, pixel) the largest chord
        key, val = key[order], val[order]
        first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
        mats.append(csr_matrix((val[first], (key[first] // (h * w), key[first] % (h * w))),
                               shape=(len(points), h * w)))
    return mats


@dataclass
class ViewResidual:
    """One view's normalised chords ``a`` (pieces × band), residual ``r``, Gram ``a·aᵀ`` and ‖a_i‖²."""

    a: csr_matrix
    r: np.ndarray
    gram: csr_matrix
    sq: np.ndarray

    def toggle(self, i: int, on: bool) -> None:
        """Piece ``i`` joins (``on``) or leaves the set: the residual loses or regains its chords."""
        row = self.a[i]
        self.r[row.indices] -= row.data if on else -row.data


@dataclass
class IntensityTerm:
    """E_I(S) = weight · Σ_views Σ_band ((L_v − k_v Σ_{i∈S} C_i,v) / (s_v √w_v))².

    ``L_v``: the measured line integral on the band around view v's mask, ``C_i,v``: piece i's chords
    there, ``k_v``: image units per mm of lumen (least squares on a piece set), ``s_v``: the median
    line integral on the mask skeleton and ``w_v`` the median vessel width (px), so that a vessel's
    whole chord profile left unexplained (or predicted twice) along one skeleton pixel costs about
    ⅔ ``weight``, in the explanation energy's unit (one uncovered skeleton pixel).
    """

    chords: list[csr_matrix]             #: per view, pieces × band pixels (mm)
    measured: list[np.ndarray]           #: per view, line integral on the band pixels
    norm: list[float]                    #: per view, 1 / (s_v √w_v)
    weight: float = DEFAULT_WEIGHT
    scale: list[float] = field(default_factory=list)     #: per view k_v, set by :meth:`fit_scale`

    @classmethod
    def build(cls, points: list[np.ndarray], radii: np.ndarray, geometry: ConeBeamGeometry,
              line_integral: np.ndarray, masks: np.ndarray, half_width: np.ndarray,
              skeletons: list[np.ndarray], *, weight: float = DEFAULT_WEIGHT, band_px: int = 3) -> "IntensityTerm":
        chords, measured, norm = [], [], []
        for v, c in enumerate(piece_chords(points, radii, geometry)):
            band = np.flatnonzero(ndimage.binary_dilation(masks[v], iterations=band_px).ravel())
            chords.append(c[:, band].tocsr())
            measured.append(line_integral[v].ravel()[band].astype(np.float64))
            sk = skeletons[v].astype(np.int64)
            s = float(np.median(line_integral[v][sk[:, 1], sk[:, 0]])) if len(sk) else 0.0
            width = max(2.0 * float(np.median(half_width[v][sk[:, 1], sk[:, 0]])) if len(sk) else 1.0, 1.0)
            norm.append(1.0 / (s * np.sqrt(width)) if s > 0 else 0.0)
        return cls(chords, measured, norm, weight)

    def fit_scale(self, selected: np.ndarray) -> None:
        """k_v by least squares of the selected pieces' summed chords against the measured line integral."""
        self.scale = []
        for c, m in zip(self.chords, self.measured):
            pred = np.asarray(c.T @ selected.astype(np.float64)).ravel()
            self.scale.append(float(pred @ m / (pred @ pred)) if pred @ pred > 0 else 0.0)

    def squared_residual(self, selected: np.ndarray) -> float:
        """Σ_views ‖r‖² of ``selected`` (E_I / weight) without the Gram matrices :meth:`state` builds."""
        total = 0.0
        for c, m, n, k in zip(self.chords, self.measured, self.norm, self.scale):
            r = m * n - (k * n) * np.asarray(c.T @ selected.astype(np.float64)).ravel()
            total += float(r @ r)
        return total

    def state(self, selected: np.ndarray) -> list[ViewResidual]:
        """Per view the normalised chords, the residual of ``selected`` and the Gram matrix."""
        out = []
        for c, m, n, k in zip(self.chords, self.measured, self.norm, self.scale):
            a = (c * (k * n)).tocsr()
            out.append(ViewResidual(a, m * n - np.asarray(a.T @ selected.astype(np.float64)).ravel(),
                                  (a @ a.T).tocsr(), np.asarray(a.multiply(a).sum(axis=1)).ravel()))
        return out

