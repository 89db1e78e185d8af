"""Epipolar centerline matching: the classic two-view 3D-QCA baseline (``coronary_two_view.md`` §7.1).

2D centerlines (mask skeletons split at junctions) of a reference view are matched point by point
to the skeleton of a second view along epipolar lines; a Viterbi pass along every reference
segment picks one candidate per point so that the triangulated 3D curve is continuous (ordering /
continuity constraint) and may skip points without a consistent match. Radii come from the 2D
distance transforms (half widths) scaled by each view's magnification, then tubes are voxelised.

The same geometry says where any reconstruction is weak: :func:`epipolar_point_angle` gives, per
centerline point, how far the vessel turns out of the views' epipolar planes,
:func:`depth_ambiguous_length` sums the centerline that runs in them, whose depth no view constrains,
and :func:`plan_further_view` picks the C-arm angles of a further view that would fix most of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import BadInput
from ..geometry import ConeBeamGeometry
from ..vessels.centerlines import CenterlineTree
from .graph import PointTree, ViewMaps, _sample, connect_tree, tubes_to_occupancy
from .problem import CoronaryProblem, CoronaryResult, Progress


def skeleton_segments(skeleton: np.ndarray, min_length: int = 4) -> list[np.ndarray]:
    """Ordered pixel chains (K, 2) as (col, row) of a 2D skeleton cut at its junction pixels."""
    sk = skeleton.astype(bool)
    nb = ndimage.convolve(sk.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
    body = sk & (nb <= 2)
    lab, n = ndimage.label(body, structure=np.ones((3, 3)))
    segs: list[np.ndarray] = []
    for obj, sl in enumerate(ndimage.find_objects(lab), start=1):
        pix = np.argwhere(lab[sl] == obj) + np.array([sl[0].start, sl[1].start])
        if len(pix) < min_length:
            continue
        pos = {tuple(p): i for i, p in enumerate(pix)}
        nbrs = [[pos[(p[0] + dy, p[1] + dx)] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if (dy or dx) and (p[0] + dy, p[1] + dx) in pos] for p in pix]
        start = next((i for i, q in enumerate(nbrs) if len(q) <= 1), 0)
        order, seen = [start], {start}
        while True:
            nxt = [j for j in nbrs[order[-1]] if j not in seen]
            if not nxt:
                break
            order.append(nxt[0])
            seen.add(nxt[0])
        segs.append(pix[order][:, ::-1].astype(np.float64))
    return segs


def _rays(geometry: ConeBeamGeometry, view: int, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source position (3,) and unit ray directions (M, 3) through pixels ``uv`` (col, row)."""
    s = geometry.source[view]
    pts = geometry.pixel00[view] + uv[:, :1] * geometry.det_u[view] + uv[:, 1:2] * geometry.det_v[view]
    d = pts - s
    return s, d / np.linalg.norm(d, axis=1, keepdims=True)


def _triangulate(s0: np.ndarray, d0: np.ndarray, s1: np.ndarray, d1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-points of the closest approach of ray pairs and the gap between the rays (mm)."""
    w = s0 - s1
    b = np.sum(d0 * d1, axis=-1)
    d = np.sum(d0 * w, axis=-1)
    e = np.sum(d1 * w, axis=-1)
    den = np.maximum(1 - b ** 2, 1e-9)
    t0 = (b * e - d) / den
    t1 = (e - b * d) / den
    p0 = s0 + t0[..., None] * d0
    p1 = s1 + t1[..., None] * d1
    return (p0 + p1) / 2, np.linalg.norm(p0 - p1, axis=-1)


def match_segment(seg: np.ndarray, geometry: ConeBeamGeometry, other: np.ndarray, a: int = 0, b: int = 1, *,
                  epi_px: float = 1.0, max_candidates: int = 12, jump_mm: float = 1.0,
                  skip_cost: float = 4.0) -> np.ndarray:
    """3D points (K, 3; NaN where skipped) for the pixels of ``seg`` in view ``a`` matched in view ``b``."""
    s0, d0 = _rays(geometry, a, seg)
    s1, d1_all = _rays(geometry, b, other)
    # epipolar distance of every other-view skeleton pixel to the line of each seg pixel: project two
    # points of each seg ray into view b
    near = s0 + d0 * np.linalg.norm(s0) * 0.8
    far = s0 + d0 * np.linalg.norm(s0) * 1.2
    pa, pb = geometry.subset([b]).project_points(np.concatenate([near, far]))[0].reshape(2, len(seg), 2)
    t = pb - pa
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    cands: list[np.ndarray] = []
    pts: list[np.ndarray] = []
    for k in range(len(seg)):
        rel = other - pa[k]
        dist = np.abs(rel[:, 0] * t[k, 1] - rel[:, 1] * t[k, 0])
        idx = np.flatnonzero(dist <= epi_px)
        if len(idx) > max_candidates:
            idx = idx[np.argsort(dist[idx])[:max_candidates]]
        x, _gap = _triangulate(s0, d0[k][None], s1, d1_all[idx]) if len(idx) else (np.zeros((0, 3)), None)
        cands.append(idx)
        pts.append(x.reshape(-1, 3))
    # Viterbi with one extra "skip" state per step
    n = len(seg)
    cost = [np.append(np.zeros(len(pts[0])), skip_cost)]
    back: list[np.ndarray] = []
    last_pts = pts[0]
    for k in range(1, n):
        cur = pts[k]
        prev_cost = cost[-1]
        m, mp = len(cur), len(last_pts)
        trans = np.full((mp + 1, m + 1), np.inf)
        if m and mp:
            jump = np.linalg.norm(last_pts[:, None] - cur[None], axis=2)
            trans[:mp, :m] = np.maximum(jump - jump_mm, 0) ** 2 * 10 + jump * 0.1
        trans[mp, :m] = 0.0                          # resume after a skip
        trans[:, m] = skip_cost                      # skip this point
        tot = prev_cost[:, None] + trans
        arg = np.argmin(tot, axis=0)
        cost.append(tot[arg, np.arange(m + 1)])
        back.append(arg)
        last_pts = cur
    state = int(np.argmin(cost[-1]))
    out = np.full((n, 3), np.nan)
    for k in range(n - 1, -1, -1):
        if state < len(pts[k]):
            out[k] = pts[k][state]
        if k > 0:
            state = int(back[k - 1][state])
    return out


def epipolar_curves(problem: CoronaryProblem, views: ViewMaps | None = None, *, ref: int = 0, other: int = 1,
                    min_points: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """3D centerline pieces (world mm) and their radii (mm) from matching view ``ref`` against ``other``."""
    views = views or ViewMaps.from_masks(problem.masks)
    g = problem.geometry
    segs = skeleton_segments(views.skeleton_image(ref))
    curves, radii = [], []
    for seg in segs:
        x = match_segment(seg, g, views.skeletons[other], ref, other)
        good = np.isfinite(x[:, 0])
        # split at skips so every piece is continuous
        cuts = np.flatnonzero(np.diff(good.astype(int)) != 0) + 1
        for piece in np.split(np.arange(len(x)), cuts):
            if len(piece) >= min_points and good[piece[0]]:
                p = x[piece]
                uv, w = g.project_points_with_depth(p)
                hw = _sample(views.half_width, uv, 0.0)
                r_mm = np.maximum(hw - 0.5, 0.5) * w * g.pixel_spacing.min(axis=1)[:, None]
                curves.append(p)
                radii.append(ndimage.median_filter(np.median(r_mm, axis=0), size=5, mode="nearest"))
    return curves, radii


def _plane_angle(at: np.ndarray, tangent: np.ndarray, geometry: ConeBeamGeometry | np.ndarray) -> np.ndarray:
    """Largest angle (degrees) between unit ``tangent`` (K, 3) at ``at`` (K, 3) and any view pair's epipolar
    plane; ``geometry`` may also be just the views' source positions (V, 3), which is all the planes need."""
    src = np.asarray(geometry.source if isinstance(geometry, ConeBeamGeometry) else geometry, dtype=np.float64)
    best = np.zeros(len(at))
    for a in range(len(src)):
        for b in range(a + 1, len(src)):
            n = np.cross(src[a] - at, src[b] - at)
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
            best = np.maximum(best, np.degrees(np.arcsin(np.clip(np.abs((tangent * n).sum(axis=1)), 0.0, 1.0))))
    return best


def epipolar_plane_angle(points: np.ndarray, geometry: ConeBeamGeometry | np.ndarray) -> np.ndarray:
    """Per segment of a polyline (M, 3), the largest angle (degrees) to the epipolar plane of any view pair
    (``geometry``, or just the views' source positions (V, 3): the planes depend on nothing else).

    A vessel that runs in the epipolar plane of every pair projects along the epipolar lines of every
    view, so no view constrains where along those lines it lies: its depth comes from the continuity of
    its ends alone. One view gives no pair, hence 0° everywhere.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) < 2:
        return np.zeros(0)
    step = np.diff(p, axis=0)
    return _plane_angle(0.5 * (p[1:] + p[:-1]), step / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-12),
                        geometry)


def epipolar_point_angle(points: np.ndarray, geometry: ConeBeamGeometry) -> np.ndarray:
    """Per point of a polyline (M, 3), :func:`epipolar_plane_angle` of its local (central-difference)
    tangent: the per-point ``EpipolarAngle`` written next to ``Radius`` in the coronary centerlines."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) < 2:
        return np.zeros(len(p))
    t = np.gradient(p, axis=0)
    return _plane_angle(p, t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12), geometry)


def open_depth_length(curves: list[np.ndarray], geometry: ConeBeamGeometry | np.ndarray,
                      max_deg: float = 10.0) -> float:
    """Length (mm) of the polylines ``curves`` within ``max_deg`` of every view pair's epipolar plane
    (``geometry``, or the views' source positions): the part whose depth the views leave open."""
    total = 0.0
    for c in curves:
        p = np.asarray(c, dtype=np.float64).reshape(-1, 3)
        if len(p) >= 2:
            seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
            total += float(seg[epipolar_plane_angle(p, geometry) < max_deg].sum())
    return total


def depth_ambiguous_length(tree: CenterlineTree, geometry: ConeBeamGeometry, max_deg: float = 10.0) -> float:
    """:func:`open_depth_length` of a centerline tree's branches. On 12 simulated two-view cases the
    ghosts kept by the graph stage lie there 2.4× as often as the correct pieces (39 % vs 16 % of their
    length within 10°)."""
    return open_depth_length([br.points for br in tree.branches], geometry, max_deg)


#: the C-arm angles (deg) a further view is chosen from, the span of the usual coronary projections:
#: primary LAO (+) / RAO (−) up to 60°, secondary CRA (+) / CAU (−) up to 40°
FURTHER_VIEW_PRIMARY = tuple(range(-60, 61, 5))
FURTHER_VIEW_SECONDARY = tuple(range(-40, 41, 5))
#: a further view must be at least this far (deg, seen from the isocentre) from each of the views
MIN_SEPARATION_DEG = 20.0


@dataclass(frozen=True)
class FurtherView:
    """The suggested further view and what it does to the open depth of a centerline."""

    primary_deg: float          #: LAO (+) / RAO (−)
    secondary_deg: float        #: CRA (+) / CAU (−)
    open_mm: float              #: centerline length whose depth would stay open with it
    open_mm_now: float          #: ... with the views there are (``depth_ambiguous_length``)
    foreshortening: float       #: length-weighted mean |cos| of centerline and its rays (0: seen broadside)
    source_mm: tuple[float, float, float]   #: its source position (the geometry's frame), at the views' mean SOD

    def label(self) -> str:
        """``LAO 35° CRA 20°`` style, as the C-arm shows it."""
        side = "LAO" if self.primary_deg >= 0 else "RAO"
        tilt = "CRA" if self.secondary_deg >= 0 else "CAU"
        return f"{side} {abs(self.primary_deg):.0f}° {tilt} {abs(self.secondary_deg):.0f}°"


def plan_further_view(curves: list[np.ndarray], geometry: ConeBeamGeometry, max_deg: float = 10.0) -> FurtherView:
    """The C-arm angles of a further view that leave the least of ``curves`` (world mm polylines,
    e.g. the reconstructed centerline branches) within ``max_deg`` of every view pair's epipolar plane.

    Where two views leave the depth open, the pruning loses the true vessel most (``coronary_quality.py
    --diagnose``) and a third view fixes it. Candidates are ``FURTHER_VIEW_PRIMARY`` × ``FURTHER_VIEW_SECONDARY``
    at the views' mean source-isocentre distance, at least ``MIN_SEPARATION_DEG`` from every view; ties
    in open length (to 1 mm) go to the view that sees the centerline least foreshortened. Needs the
    geometry in the C-arm's frame (DICOM patient LPS, isocentre at the origin), as XA DICOM and the
    JSON sidecars give it.
    """
    if not str(geometry.meta.get("frame", "")).startswith("DICOM patient"):
        raise BadInput("a further view can only be suggested for C-arm geometry (DICOM patient frame, isocentre at "
                       f"the origin); this geometry's frame is {geometry.meta.get('frame', 'not given')!r}")
    segs = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in curves]
    segs = [c for c in segs if len(c) >= 2]
    if not segs:
        raise BadInput("no centerline to plan a further view for")
    mid = np.concatenate([0.5 * (c[1:] + c[:-1]) for c in segs])
    step = np.concatenate([np.diff(c, axis=0) for c in segs])
    length = np.linalg.norm(step, axis=1)
    tangent = step / np.maximum(length, 1e-12)[:, None]
    src = np.asarray(geometry.source, dtype=np.float64)
    prim, sec = (g.ravel() for g in np.meshgrid(np.asarray(FURTHER_VIEW_PRIMARY, float),
                                                np.asarray(FURTHER_VIEW_SECONDARY, float), indexing="ij"))
    sod = float(np.linalg.norm(src, axis=1).mean())                          # only the sources matter here
    cand = ConeBeamGeometry.from_xa_angles(prim, sec, 2 * sod, sod, (1.0, 1.0), geometry.det_shape).source
    cos_apart = (src / np.linalg.norm(src, axis=1, keepdims=True)) @ (cand / np.linalg.norm(cand, axis=1)[:, None]).T
    apart = np.degrees(np.arccos(np.clip(cos_apart, -1.0, 1.0))).min(axis=0)
    open_mm = np.empty(len(cand))
    foreshort = np.empty(len(cand))
    for k, c in enumerate(cand):
        open_mm[k] = float(length[_plane_angle(mid, tangent, np.vstack([src, c])) < max_deg].sum())
        ray = (mid - c) / np.linalg.norm(mid - c, axis=1, keepdims=True)
        foreshort[k] = float((np.abs((ray * tangent).sum(axis=1)) * length).sum() / length.sum())
    allowed = apart >= MIN_SEPARATION_DEG
    if not allowed.any():
        raise BadInput(f"no C-arm angle on the grid is {MIN_SEPARATION_DEG:g}° from every view")
    k = int(np.lexsort((foreshort, np.round(open_mm), ~allowed))[0])
    return FurtherView(float(prim[k]), float(sec[k]), float(open_mm[k]), open_depth_length(segs, src, max_deg),
                       float(foreshort[k]),
                       (float(cand[k, 0]), float(cand[k, 1]), float(cand[k, 2])))


def reconstruct_epipolar(problem: CoronaryProblem, *, preset: str = "fast", device: str = "cpu", seed: int = 0,
                         progress: Progress | None = None) -> CoronaryResult:
    """Epipolar baseline: matched 2D centerlines → 3D tubes (pieces joined into one tree)."""
    report = progress or (lambda f, m: None)
    if problem.geometry.n_views < 2:
        from ..errors import BadInput

        raise BadInput("the epipolar method needs at least two views")
    report(0.05, "2D centerlines")
    views = ViewMaps.from_masks(problem.masks)
    report(0.2, "epipolar matching")
    curves, radii = epipolar_curves(problem, views)
    report(0.7, f"{len(curves)} matched pieces → tubes")
    tree: PointTree = connect_tree(curves, radii, join_mm=1.5)
    occ = tubes_to_occupancy(tree, problem.grid)
    report(1.0, "epipolar done")
    info: dict[str, Any] = {"method": "epipolar", "pieces": len(curves), "components": tree.n_components()}
    return CoronaryResult(occ, problem.grid, tree.to_centerlines(float(problem.grid.spacing.min())), info)
