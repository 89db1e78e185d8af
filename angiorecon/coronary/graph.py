"""Vascular graph optimisation: one connected centerline tree with radii fitted to every view.

AutoCAR-style second stage (``coronary_two_view.md`` §4.3, own implementation from the idea):

1. skeletonise a candidate 3D occupancy (visual hull or refined hull) into branches;
2. cut the candidates where they pass a 2D junction in any view (a match can switch vessel at a
   crossing), then prune ghost pieces: a piece is kept only when it reprojects onto vessel in every
   view *and* explains vessel centreline pixels no kept piece explains yet, in every view (two-view
   ghosts are redundant: each of their projections lies on a vessel a true branch already covers);
   the greedy order favours pieces whose per-view widths agree and that lie near the kept tree,
   then a local search on one explanation energy (uncovered skeleton pixels + a cost per kept
   piece, higher where the learned refinement does not support it + a penalty per extra tree
   component + the residual between the images' vessel line integrals and the kept pieces' lumen
   chords) swaps ghosts the greedy took first for the true branches they shadowed; it also starts
   from the optimum of the pixel and cost terms alone (a small integer programme) and keeps the
   lower minimum;
3. join the kept branches into one tree (shared junctions, then shortest bridges between pieces,
   then a spanning tree — connectivity holds by construction, whatever the optimiser does);
4. fit point positions and radii with torch: 2D centreline reprojection error in every view (both
   directions: tree → mask skeleton and skeleton → tree), tube width against the mask's distance
   transform, curvature and spacing regularisers and a radius floor;
5. voxelise the tubes on the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, csr_matrix, hstack, identity, vstack
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid
from ..vessels.centerlines import CenterlineTree, extract_centerlines
from .intensity import DEFAULT_WEIGHT, IntensityTerm, ViewResidual, vessel_line_integral
from .problem import CoronaryProblem, Progress


def _noop(_f: float, _m: str = "") -> None:
    pass


@dataclass
class ViewMaps:
    """Per-view 2D evidence: binary masks, skeleton pixels and distance maps (pixels)."""

    masks: np.ndarray                 #: [V, H, W] bool
    skeletons: list[np.ndarray]       #: per view (K, 2) skeleton pixels as (col, row)
    to_skeleton: np.ndarray           #: [V, H, W] distance to the nearest skeleton pixel
    to_mask: np.ndarray               #: [V, H, W] distance to the nearest vessel pixel (0 inside)
    half_width: np.ndarray            #: [V, H, W] distance to the background (vessel half width inside)

    @classmethod
    def from_masks(cls, masks: np.ndarray, level: float = 0.5) -> "ViewMaps":
        b = np.asarray(masks) >= level
        skel = np.stack([skeletonize(m) for m in b])
        pts = [np.argwhere(s)[:, ::-1].astype(np.float64) for s in skel]
        to_s = np.stack([ndimage.distance_transform_edt(~s) for s in skel]).astype(np.float32)
        to_m = np.stack([ndimage.distance_transform_edt(~m) for m in b]).astype(np.float32)
        hw = np.stack([ndimage.distance_transform_edt(m) for m in b]).astype(np.float32)
        return cls(b, pts, to_s, to_m, hw)

    def skeleton_image(self, v: int) -> np.ndarray:
        """View ``v``'s skeleton as a boolean image (for cutting it into chains at junctions)."""
        img = np.zeros(self.masks.shape[1:], dtype=bool)
        s = self.skeletons[v].astype(np.int64)
        img[s[:, 1], s[:, 0]] = True
        return img


@dataclass
class PointTree:
    """A tree of points: positions (N, 3) world mm, radii (N,) mm, parent index (-1 at the root)."""

    points: np.ndarray
    radii: np.ndarray
    parent: np.ndarray

    def edges(self) -> np.ndarray:
        child = np.flatnonzero(self.parent >= 0)
        return np.stack([self.parent[child], child], axis=1)

    def n_components(self) -> int:
        n = len(self.points)
        e = self.edges()
        adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        return int(connected_components(adj, directed=False)[0]) if n else 0

    def to_centerlines(self, voxel_size: float) -> CenterlineTree:
        """Branches split at bifurcations, proximal → distal, each starting at its parent's junction."""
        n = len(self.points)
        children: list[list[int]] = [[] for _ in range(n)]
        for i, p in enumerate(self.parent):
            if p >= 0:
                children[p].append(i)
        curves: list[np.ndarray] = []
        radii: list[np.ndarray] = []
        parents: list[int | None] = []
        roots = [int(i) for i in np.flatnonzero(self.parent < 0)]
        stack: list[tuple[int, int, int | None]] = []        # (junction point, first child, parent branch)
        for r in roots:
            if not children[r]:
                continue
            for c in children[r]:
                stack.append((r, c, None))
        while stack:
            start, nxt, pb = stack.pop()
            chain = [start, nxt]
            while len(children[chain[-1]]) == 1:
                chain.append(children[chain[-1]][0])
            curves.append(self.points[chain])
            radii.append(self.radii[chain])
            parents.append(pb)
            me = len(curves) - 1
            for c in children[chain[-1]]:
                stack.append((chain[-1], c, me))
        return CenterlineTree.from_curves(curves, radii, parents, voxel_size=voxel_size)


# ----------------------------------------------------------------------------- branch candidates
def resample_polyline(points: np.ndarray, radii: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points and (N,) radii resampled evenly by arc length, at most ``step`` mm apart (ends kept)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return points[:1], radii[:1]
    t = np.linspace(0.0, s[-1], max(2, int(np.ceil(s[-1] / step)) + 1))
    p = np.stack([np.interp(t, s, points[:, k]) for k in range(3)], axis=1)
    return p, np.interp(t, s, radii)


def _sample(maps: np.ndarray, uv: np.ndarray, cval: float) -> np.ndarray:
    return np.stack([ndimage.map_coordinates(maps[v], [uv[v, :, 1], uv[v, :, 0]], order=1, mode="constant",
                                             cval=cval) for v in range(len(maps))])


def skeleton_junctions(views: ViewMaps) -> list[np.ndarray]:
    """Per view, the skeleton pixels (col, row) with three or more skeleton neighbours (bifurcations, crossings)."""
    out = []
    for v, s in enumerate(views.skeletons):
        img = np.zeros(views.masks.shape[1:], dtype=bool)
        img[s[:, 1].astype(np.int64), s[:, 0].astype(np.int64)] = True
        nb = ndimage.convolve(img.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
        out.append(np.argwhere(img & (nb >= 3))[:, ::-1].astype(np.float64))
    return out


def split_at_junctions(curves: list[np.ndarray], radii: list[np.ndarray], geometry: ConeBeamGeometry,
                       views: ViewMaps, *, tol_px: float = 2.0, min_points: int = 3
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cut every 3D candidate where its projection passes a skeleton junction in *any* view.

    An epipolar match or a hull skeleton branch can run along one vessel and, at a 2D crossing or
    bifurcation in one view, continue on a different vessel there (a continuous 3D curve that is
    half real, half ghost). Cut into pieces between junctions, the real and the ghost parts compete
    separately in the pruning, and a long ghost cannot win on length alone.
    """
    kts = [cKDTree(j) if len(j) else None for j in skeleton_junctions(views)]
    out_c: list[np.ndarray] = []
    out_r: list[np.ndarray] = []
    for c, r in zip(curves, radii):
        c = np.asarray(c, float)
        uv = geometry.project_points(c)
        near = np.zeros(len(c), dtype=bool)
        for v, t in enumerate(kts):
            if t is not None:
                near |= t.query(uv[v])[0] <= tol_px
        lab, n = ndimage.label(near)
        cuts = [int(np.mean(np.flatnonzero(lab == k))) for k in range(1, n + 1)]
        bounds = [0] + [k for k in cuts if 0 < k < len(c) - 1] + [len(c) - 1]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a + 1 >= min_points:
                out_c.append(c[a:b + 1])
                out_r.append(np.asarray(r, float)[a:b + 1])
    return out_c, out_r


#: a piece's extra search cost where the learned occupancy does not support it (benchmarks/coronary_quality.py,
#: tuning seeds 0–9 and 100–119, paired, with the set-cover start: Dice +0.020 ± 0.010, clDice +0.015 ± 0.006;
#: alone +0.007 / +0.009). ``--peer`` screens: 0.5 and 2 are flat against 1, 0 loses Dice 0.007 ± 0.003
SUPPORT_COST = 1.0


def select_branches(curves: list[np.ndarray], geometry: ConeBeamGeometry, views: ViewMaps, *,
                    step: float = 0.5, tol_px: float = 2.0, min_inside: float = 0.8,
                    min_new_px: int = 4, min_new_fraction: float = 0.25,
                    width_agreement: bool = True, agree_power: float = 4.0, join_mm: float = 1.5,
                    gap_scale_mm: float = 10.0, max_gap_mm: float = 15.0, fill_gap_mm: float = 3.0,
                    fill_agree: float = 0.9, search: bool = True, px_cost: float = 0.3,
                    disagree_cost: float = 1.0, component_px: float = 25.0, touch_mm: float = 2.0,
                    line_integral: np.ndarray | None = None, intensity_weight: float = DEFAULT_WEIGHT,
                    support: np.ndarray | None = None, support_cost: float = SUPPORT_COST,
                    exact_start: bool = True) -> tuple[list[int], dict[str, Any]]:
    """Indices of the branches kept by ghost pruning (set cover of the mask skeletons, all views).

    A branch must project inside the vessel masks (``min_inside`` of its points within 1 px, every
    view) and add at least ``min_new_px`` and ``min_new_fraction`` of its projected length in new
    skeleton pixels in *every* view when it is chosen. The greedy score (new pixels in the worst
    view) is weighted by

    * with ``width_agreement``, how well the views agree on the lumen radius (median over the branch
      of min/max of the per-view radius in mm) to the power ``agree_power``: a real vessel is round,
      so every view sees the same width, while a ghost pairs pieces of different vessels; the power
      keeps a long ghost from winning on length alone;
    * 3D connectivity, exp(−(gap − ``join_mm``)/``gap_scale_mm``) with gap the distance to the
      branches kept so far: the tree is connected, while ghosts (pairings of different vessels)
      usually lie away from it. Branches farther than ``max_gap_mm`` are not taken at all.

    A last fill pass takes pieces within ``fill_gap_mm`` of the kept tree whose width agreement is
    at least ``fill_agree`` and that are new in *one* view (vessels overlapping another one in the
    other view); 0 disables it.

    With ``search``, the greedy set is then improved by :func:`explanation_search` (add, remove and
    swap moves on a global energy): the greedy order can take a ghost first, which then hides the
    true branch it shadows (its pixels are no longer new) and cuts the tree there. With
    ``line_integral`` (the views' contrast line integrals, ``intensity.vessel_line_integral``) the
    search's energy also holds ``intensity_weight`` times the residual between them and the kept
    pieces' summed lumen chords (``intensity.IntensityTerm``; each piece's radius is the smallest
    the views' mask widths give): masks take the union of overlapping vessels, the image adds them.

    ``support`` (per piece, in [0, 1]; ``optimise_graph`` gives the mean learned occupancy along
    it) raises a piece's cost in the search by the factor 1 + ``support_cost`` · (1 − support):
    where several piece sets explain the masks equally well, the one the refinement believes wins
    (its occupancy along true pieces has median ~0.8, along two-view ghosts ~0.2).
    ``exact_start`` is :func:`explanation_search`'s (the selection info records which start won).
    """
    trees = [cKDTree(s) if len(s) else None for s in views.skeletons]
    cover: list[list[np.ndarray]] = []
    lengths: list[np.ndarray] = []
    pts_all: list[np.ndarray] = []
    ok = []
    agree = []
    width_radius = []
    ps = geometry.pixel_spacing.min(axis=1)[:, None]
    for c in curves:
        pts = resample_polyline(c, np.zeros(len(c)), step)[0]
        pts_all.append(pts)
        uv, w = geometry.project_points_with_depth(pts)
        inside = (_sample(views.to_mask, uv, np.inf) <= 1.0).mean(axis=1)
        r_mm = _sample(views.half_width, uv, 0.0) * w * ps
        seen = (r_mm > 0).all(axis=0)
        width_radius.append(max(float(np.median(r_mm.min(axis=0))), 0.2))
        agree.append(float(np.median(r_mm[:, seen].min(0) / r_mm[:, seen].max(0))) if width_agreement and seen.any()
                     else 1.0)
        sets, lens = [], []
        for v, t in enumerate(trees):
            idx = t.query_ball_point(uv[v], tol_px) if t is not None else []
            sets.append(np.unique(np.concatenate([np.asarray(i, dtype=np.int64) for i in idx])) if len(idx)
                        else np.zeros(0, np.int64))
            lens.append(np.linalg.norm(np.diff(uv[v], axis=0), axis=1).sum())
        cover.append(sets)
        lengths.append(np.asarray(lens))
        ok.append(bool((inside >= min_inside).all()))
    covered = [np.zeros(len(s), dtype=bool) for s in views.skeletons]
    sup = np.ones(len(curves)) if support is None else np.clip(np.asarray(support, dtype=np.float64), 0.0, 1.0)
    gap = np.zeros(len(curves))
    chosen: list[int] = []
    left = {i for i, good in enumerate(ok) if good}

    def take(best: int) -> None:
        """Keep candidate ``best``: mark its pixels covered and update every other's distance to the tree."""
        first = not chosen
        chosen.append(best)
        left.discard(best)
        for v in range(len(covered)):
            covered[v][cover[best][v]] = True
        kt = cKDTree(pts_all[best])
        for i in left:
            d = float(kt.query(pts_all[i])[0].min())
            gap[i] = d if first else min(gap[i], d)

    while left:
        best, best_score = -1, -1.0
        for i in left:
            if chosen and gap[i] > max_gap_mm:
                continue
            new = np.array([np.count_nonzero(~covered[v][cover[i][v]]) for v in range(len(covered))])
            if (new < min_new_px).any() or (new < min_new_fraction * lengths[i]).any():
                continue
            score = float(new.min()) * agree[i] ** agree_power * np.exp(-max(gap[i] - join_mm, 0.0) / gap_scale_mm)
            if score > best_score:
                best, best_score = i, score
        if best < 0:
            break
        take(best)
    n_main = len(chosen)
    # fill: a vessel that overlaps another one in some view adds nothing new there, so the every-view
    # rule above cannot take it; accept it when it is attached to the tree, round and new in one view
    while chosen and fill_gap_mm > 0:
        best, best_score = -1, 0.0
        for i in left:
            if gap[i] > fill_gap_mm or agree[i] < fill_agree:
                continue
            new = np.array([np.count_nonzero(~covered[v][cover[i][v]]) for v in range(len(covered))])
            if not ((new >= min_new_px) & (new >= min_new_fraction * lengths[i])).any():
                continue
            score = float(new.max()) * agree[i] ** agree_power
            if score > best_score:
                best, best_score = i, score
        if best < 0:
            break
        take(best)
    info: dict[str, Any] = {"candidates": len(curves), "reproject_inside": int(sum(ok)), "greedy": n_main,
                            "filled": len(chosen) - n_main}
    if search and chosen:
        cost = [px_cost * float(lengths[i].sum()) * (1 + disagree_cost * (1 - agree[i]) + support_cost * (1 - sup[i]))
                for i in range(len(curves))]
        intensity = None
        if line_integral is not None and intensity_weight > 0:
            intensity = IntensityTerm.build(pts_all, np.asarray(width_radius), geometry, line_integral, views.masks,
                                            views.half_width, views.skeletons, weight=intensity_weight)
        outcome: dict[str, Any] = {}
        chosen, moves = explanation_search(chosen, [i for i, good in enumerate(ok) if good], cover,
                                           [len(s) for s in views.skeletons], cost, pts_all,
                                           component_px=component_px, touch_mm=touch_mm, intensity=intensity,
                                           exact_start=exact_start, outcome=outcome)
        info["search_moves"] = moves
        info.update(outcome)
        if intensity is not None:
            info["intensity_scale"] = intensity.scale
        covered = [np.zeros(len(s), dtype=bool) for s in views.skeletons]
        for i in chosen:
            for v in range(len(covered)):
                covered[v][cover[i][v]] = True
    info["kept"] = len(chosen)
    info["skeleton_coverage"] = [float(c.mean()) if len(c) else 0.0 for c in covered]
    return chosen, info


def explanation_search(start: list[int], eligible: list[int], cover: list[list[np.ndarray]], n_pixels: list[int],
                       cost: list[float], points: list[np.ndarray], *, component_px: float = 25.0,
                       touch_mm: float = 2.0, max_moves: int = 200, intensity: IntensityTerm | None = None,
                       exact_start: bool = True, time_limit_s: float = 10.0,
                       outcome: dict[str, Any] | None = None) -> tuple[list[int], int]:
    """Best-improvement local search (add, remove, swap one piece) from ``start`` on the energy

    E(S) = Σ_views #skeleton pixels no piece of S covers + Σ_{i∈S} cost_i
           + ``component_px`` · (#connected components of S − 1) [+ ``intensity``'s residual E_I(S)]

    (two pieces touch when their points come within ``touch_mm``). Why: a two-view ghost pairs
    pieces of different vessels, so once the true branches are kept it covers no pixel they do not
    and only pays its cost; a true branch hidden behind another vessel in one view still pays for
    itself with the pixels it explains in the other; a missing link splits the tree. E_I tells the
    two apart where the masks cannot: the ghost doubles the chord on the vessel it lies on, the
    hidden branch explains a doubled chord (its scale is fitted once, on ``start``).

    With ``exact_start`` the search also descends from :func:`set_cover_start` (the optimum of the
    energy's pixel and cost terms alone, ``time_limit_s``) and keeps the lower of the two minima:
    one-piece moves cannot leave a minimum where two ghosts shadow three true pieces (right case 6
    lost its proximal RCA that way; the clean set had the lower energy). Returns the kept indices
    and the number of moves made; ``outcome``, when given, receives the winning start
    (``search_start``: "greedy" or "set cover") and the final energy (``search_energy``).
    """
    n = len(cover)
    mats = []
    for v in range(len(n_pixels)):
        cols = [np.asarray(c[v], dtype=np.int64) for c in cover]
        ptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])])
        mats.append(csr_matrix((np.ones(ptr[-1]), np.concatenate(cols), ptr), shape=(n, n_pixels[v])))
    cost_a = np.asarray(cost, dtype=np.float64)
    can = np.zeros(n, dtype=bool)
    can[eligible] = True
    lab = np.repeat(np.arange(n), [len(p) for p in points])
    pr = cKDTree(np.concatenate(points)).query_pairs(touch_mm, output_type="ndarray")
    a, b = lab[pr[:, 0]], lab[pr[:, 1]]
    m = a != b
    touch = coo_matrix((np.ones(2 * m.sum()), (np.r_[a[m], b[m]], np.r_[b[m], a[m]])), shape=(n, n)).tocsr()
    share = sum(mm @ mm.T for mm in mats).tocsr()            # pieces with a skeleton pixel in common
    sel0 = np.zeros(n, dtype=bool)
    sel0[start] = True
    if intensity is not None:
        intensity.fit_scale(sel0)
        share = (share + sum(s.gram for s in intensity.state(sel0))).tocsr()    # pieces overlapping in an image too
        weight = intensity.weight

    def components(mask: np.ndarray) -> tuple[int, np.ndarray]:
        """Number of components of the pieces in ``mask`` and, per piece, how many it would touch."""
        idx = np.flatnonzero(mask)
        k, lab_s = connected_components(touch[idx][:, idx], directed=False)
        hit = touch[:, idx] @ coo_matrix((np.ones(len(idx)), (np.arange(len(idx)), lab_s)), shape=(len(idx), k))
        return k, np.asarray((hit > 0).sum(axis=1)).ravel()

    def penalty(k: np.ndarray | int) -> np.ndarray:
        return component_px * np.maximum(np.asarray(k) - 1, 0)

    def energy(sel: np.ndarray) -> float:
        """E(S) itself, to compare the minima reached from different starts."""
        e = sum(float(np.count_nonzero(np.asarray(mm.T @ sel.astype(np.float64)).ravel() == 0)) for mm in mats)
        e += float(cost_a[sel].sum()) + float(penalty(components(sel)[0] if sel.any() else 1))
        if intensity is not None:
            e += weight * intensity.squared_residual(sel)
        return e

    def descend(sel: np.ndarray) -> tuple[np.ndarray, int]:
        """Best-improvement moves from ``sel`` until none lowers E (or ``max_moves``)."""
        sel = sel.copy()
        counts = [np.asarray(mm.T @ sel.astype(np.float64)).ravel() for mm in mats]
        views_i: list[ViewResidual] = intensity.state(sel) if intensity is not None else []
        sq = sum(s.sq for s in views_i)                               # ‖a_i‖²: fixed while the set changes
        moves = 0
        while moves < max_moves:
            comp, joined = components(sel)
            best, best_d = None, -1e-6
            # add i: cost_i − (pixels only i would cover) + the change of the component penalty
            gain = sum(mm @ (c == 0).astype(np.float64) for mm, c in zip(mats, counts))
            d_add = np.where(sel | ~can, np.inf, cost_a - gain + penalty(comp + 1 - joined) - penalty(comp))
            if views_i:                 # ‖r − a_i‖² − ‖r‖² and ‖r + a_j‖² − ‖r‖², summed over views
                ar = sum(s.a @ s.r for s in views_i)
                d_add = d_add + weight * (sq - 2 * ar)
            i = int(np.argmin(d_add))
            if d_add[i] < best_d:
                best, best_d = (i,), float(d_add[i])
            # remove j (and perhaps add a piece sharing its pixels instead)
            only = sum(mm @ (c == 1).astype(np.float64) for mm, c in zip(mats, counts))
            for j in np.flatnonzero(sel):
                rest = sel.copy()
                rest[j] = False
                k_rest, joined_rest = components(rest) if rest.any() else (0, np.zeros(n))
                d_rem = only[j] - cost_a[j] + penalty(k_rest) - penalty(comp)
                if views_i:
                    d_rem += weight * (sq[j] + 2 * ar[j])
                if d_rem < best_d:
                    best, best_d = (j,), float(d_rem)
                part = share[j].indices
                part = part[can[part] & ~sel[part]]
                if not len(part):
                    continue
                g = np.zeros(len(part))
                for mm, c in zip(mats, counts):
                    after = c.copy()
                    after[mm[j].indices] -= 1
                    g += mm[part] @ (after == 0).astype(np.float64)
                d_sw = d_rem + cost_a[part] - g + penalty(k_rest + 1 - joined_rest[part]) - penalty(k_rest)
                if views_i:                 # then add i to r + a_j: ‖r + a_j − a_i‖² − ‖r + a_j‖²
                    cross = sum(np.asarray(s.gram[j, part].todense()).ravel() for s in views_i)
                    d_sw = d_sw + weight * (sq[part] - 2 * ar[part] - 2 * cross)
                k = int(np.argmin(d_sw))
                if d_sw[k] < best_d:
                    best, best_d = (j, int(part[k])), float(d_sw[k])
            if best is None:
                break
            for k in best:
                sel[k] = not sel[k]
                for mm, c in zip(mats, counts):
                    c[mm[k].indices] += 1 if sel[k] else -1
                for s in views_i:
                    s.toggle(k, sel[k])
            moves += 1
        return sel, moves

    sel, moves = descend(sel0)
    won, e_sel = "greedy", energy(sel)
    if exact_start:
        alt = set_cover_start(mats, cost_a, can, time_limit_s)
        if alt is not None:
            alt, alt_moves = descend(alt)
            moves += alt_moves
            e_alt = energy(alt)
            if e_alt < e_sel:
                sel, won, e_sel = alt, "set cover", e_alt
    if outcome is not None:
        outcome.update(search_start=won, search_energy=round(e_sel, 3))
    return [int(i) for i in np.flatnonzero(sel)], moves


def set_cover_start(cover: list[csr_matrix], cost: np.ndarray, eligible: np.ndarray,
                    time_limit_s: float = 10.0, rel_gap: float = 0.01) -> np.ndarray | None:
    """The piece set minimising #uncovered skeleton pixels + Σ cost (a weighted maximum coverage).

    ``cover``: per view, pieces × skeleton pixels; ``eligible``: boolean per piece. Solved as a
    mixed-integer programme by HiGHS (a pixel counts as covered only when a chosen piece covers it;
    pixels covered by the same pieces are one variable weighted by their count) to ``rel_gap`` of
    the optimum, which takes a few seconds where the exact optimum took 10–30 (right case 112).
    The search's other terms (components, line integrals) are not linear; the local search adds
    them from this start. Returns a boolean mask over the pieces, or None when no piece is eligible
    or HiGHS found no solution within ``time_limit_s``.
    """
    el = np.flatnonzero(eligible)
    if not len(el):
        return None
    covers = vstack([m[el].T for m in cover]).tocsr()                 # pixels × eligible pieces
    groups: dict[bytes, int] = {}
    for p in range(covers.shape[0]):
        pieces = covers.indices[covers.indptr[p]:covers.indptr[p + 1]]
        if len(pieces):
            key = np.sort(pieces).tobytes()
            groups[key] = groups.get(key, 0) + 1
    if not groups:
        return None
    rows = [np.frombuffer(k, dtype=covers.indices.dtype) for k in groups]
    weight = np.fromiter(groups.values(), dtype=np.float64, count=len(groups))
    ptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    grouped = csr_matrix((np.ones(ptr[-1]), np.concatenate(rows), ptr), shape=(len(rows), len(el)))
    res = milp(np.concatenate([cost[el], -weight]),
               constraints=LinearConstraint(hstack([-grouped, identity(len(rows))]).tocsr(), -np.inf, 0.0),
               integrality=np.concatenate([np.ones(len(el)), np.zeros(len(rows))]), bounds=Bounds(0.0, 1.0),
               options={"time_limit": time_limit_s, "mip_rel_gap": rel_gap})
    if res.x is None:
        return None
    out = np.zeros(len(eligible), dtype=bool)
    out[el[res.x[:len(el)] > 0.5]] = True
    return out


def connect_tree(curves: list[np.ndarray], radii: list[np.ndarray], *, step: float = 0.5,
                 join_mm: float = 1.0, min_piece_mm: float = 4.0) -> PointTree:
    """One tree from polylines: merge shared junctions, bridge the pieces by their shortest gaps, span.

    Pieces shorter than ``min_piece_mm`` that touch nothing are dropped rather than bridged (a
    bridge to an isolated speck draws a vessel that is not there).
    """
    pts, rad, edges = [], [], []
    n = 0
    for c, r in zip(curves, radii):
        p, q = resample_polyline(np.asarray(c, float), np.asarray(r, float), step)
        pts.append(p)
        rad.append(q)
        edges.extend((n + k, n + k + 1) for k in range(len(p) - 1))
        n += len(p)
    if n == 0:
        raise BadInput("no vessel branch of the 3D candidate reprojects onto the vessel masks of every view: "
                       "check the masks and the views' geometry")
    p = np.concatenate(pts)
    r = np.concatenate(rad)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    w = np.linalg.norm(p[e[:, 0]] - p[e[:, 1]], axis=1)
    # junctions: each polyline end joins the nearest point of another polyline within ``join_mm``
    piece = np.repeat(np.arange(len(pts)), [len(q) for q in pts])
    ends = np.concatenate([[s, s + len(q) - 1] for s, q in zip(np.cumsum([0] + [len(q) for q in pts])[:-1], pts)])
    kd = cKDTree(p)
    pairs = []
    for i in ends:
        near = [j for j in kd.query_ball_point(p[i], join_mm) if piece[j] != piece[i]]
        if near:
            pairs.append((i, min(near, key=lambda j: np.linalg.norm(p[j] - p[i]))))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    e = np.concatenate([e, pairs])
    w = np.concatenate([w, np.linalg.norm(p[pairs[:, 0]] - p[pairs[:, 1]], axis=1)])
    adj = coo_matrix((w + 1e-6, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    ncomp, label = connected_components(adj, directed=False)
    if ncomp > 1:
        size = np.bincount(label, minlength=ncomp) * step
        big = np.flatnonzero(size >= min_piece_mm)
        if len(big) == 0:
            big = np.array([int(np.argmax(size))])
        keep = np.isin(label, big)
        # shortest gap between every pair of kept pieces, then an MST over pieces
        trees = {c: cKDTree(p[label == c]) for c in big}
        ids = {c: np.flatnonzero(label == c) for c in big}
        bridges = []
        for a_i, a in enumerate(big):
            for b in big[a_i + 1:]:
                d, j = trees[b].query(p[ids[a]])
                k = int(np.argmin(d))
                bridges.append((a, b, float(d[k]), int(ids[a][k]), int(ids[b][j[k]])))
        pos = {c: i for i, c in enumerate(big)}
        bw = coo_matrix(([x[2] + 1e-6 for x in bridges], ([pos[x[0]] for x in bridges], [pos[x[1]] for x in bridges])),
                        shape=(len(big), len(big)))
        mst = minimum_spanning_tree(bw).tocoo()
        new_p, new_r, new_e = [p], [r], [e[keep[e[:, 0]] & keep[e[:, 1]]]]
        new_w = [w[keep[e[:, 0]] & keep[e[:, 1]]]]
        m = n
        for a, b in zip(mst.row, mst.col):
            x = next(t for t in bridges if {pos[t[0]], pos[t[1]]} == {a, b})
            i0, i1 = x[3], x[4]
            k = max(1, int(np.ceil(x[2] / step)))
            t = np.linspace(0, 1, k + 1)[1:-1, None]
            mid = p[i0] * (1 - t) + p[i1] * t
            chain = [i0] + list(range(m, m + len(mid))) + [i1]
            new_p.append(mid)
            new_r.append(np.full(len(mid), min(r[i0], r[i1])))
            ce = np.array(list(zip(chain[:-1], chain[1:])), dtype=np.int64)
            new_e.append(ce)
            new_w.append(np.full(len(ce), x[2] / k))
            m += len(mid)
        p, r = np.concatenate(new_p), np.concatenate(new_r)
        e, w = np.concatenate(new_e), np.concatenate(new_w)
        keep = np.concatenate([keep, np.ones(m - n, dtype=bool)])
        n = m
    else:
        keep = np.ones(n, dtype=bool)
    adj = coo_matrix((w + 1e-6, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    span = minimum_spanning_tree(adj + adj.T)
    span = (span + span.T).tocsr()
    # root: the widest end point (an ostium is an end of the tree, never the middle of a branch)
    ends = keep & (np.diff(span.indptr) <= 1)
    root = int(np.argmax(np.where(ends if ends.any() else keep, r, -np.inf)))
    parent = np.full(n, -2, dtype=np.int64)
    parent[root] = -1
    order = [root]
    for i in order:                                          # breadth-first from the widest point
        for j in span.indices[span.indptr[i]:span.indptr[i + 1]]:
            if parent[j] == -2:
                parent[j] = i
                order.append(j)
    sel = np.array(order)
    remap = np.full(n, -1, dtype=np.int64)
    remap[sel] = np.arange(len(sel))
    par = np.where(parent[sel] >= 0, remap[np.maximum(parent[sel], 0)], -1)
    return PointTree(p[sel], r[sel], par)


# ----------------------------------------------------------------------------- optimisation
def fit_tree(tree: PointTree, geometry: ConeBeamGeometry, views: ViewMaps, *, iterations: int = 150,
             lr: float = 0.02, r_min: float = 0.3, w_cover: float = 1.0, w_curv: float = 2.0,
             w_spacing: float = 1.0, w_radius: float = 1.0, cap_px: float = 8.0, cover_px: float = 3.0, device: str = "cpu",
             progress: Progress = _noop) -> tuple[PointTree, dict[str, Any]]:
    """Fit positions and radii of ``tree`` to every view (topology fixed, so it stays one tree)."""
    dev = torch.device(device)
    f32 = dict(dtype=torch.float32, device=dev)
    P = torch.as_tensor(geometry.projection_matrices(), **f32)                  # (V, 3, 4)
    H, W = geometry.det_shape
    ps = torch.as_tensor(geometry.pixel_spacing.min(axis=1), **f32)             # (V,)
    to_skel = torch.as_tensor(views.to_skeleton, **f32)[:, None]
    half_w = torch.as_tensor(views.half_width, **f32)[:, None]
    to_mask = torch.as_tensor(views.to_mask, **f32)[:, None]
    skel = [torch.as_tensor(s, **f32) for s in views.skeletons]
    x = torch.as_tensor(tree.points, **f32).clone().requires_grad_(True)
    log_r = torch.as_tensor(np.log(np.maximum(tree.radii, r_min)), **f32).clone().requires_grad_(True)
    e = torch.as_tensor(tree.edges(), dtype=torch.long, device=dev)
    par = torch.as_tensor(tree.parent, dtype=torch.long, device=dev)
    has_gp = (par >= 0) & (par[par.clamp(min=0)] >= 0)
    i_c = torch.nonzero(has_gp).flatten()
    i_p = par[i_c]
    i_g = par[i_p]
    step0 = float(np.median(np.linalg.norm(tree.points[tree.edges()[:, 1]] - tree.points[tree.edges()[:, 0]],
                                           axis=1))) if len(e) else 0.5
    opt = torch.optim.Adam([{"params": [x], "lr": lr}, {"params": [log_r], "lr": 0.05}])

    def project(pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.einsum("vij,mj->vmi", P[:, :, :3], pts) + P[:, None, :, 3]
        return q[..., :2] / q[..., 2:3], q[..., 2]

    def sample(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        g = torch.stack([2 * uv[..., 0] / (W - 1) - 1, 2 * uv[..., 1] / (H - 1) - 1], dim=-1)[:, None]
        return torch.nn.functional.grid_sample(img, g, align_corners=True, padding_mode="border")[:, 0, 0]

    history = []
    for it in range(iterations):
        opt.zero_grad()
        uv, w = project(x)
        d = sample(to_skel, uv).clamp(max=cap_px)
        data = (d ** 2).mean()
        if it % 10 == 0:                                   # ICP-style: re-pair skeleton pixels with points
            with torch.no_grad():
                uv_np = uv.detach().cpu().numpy()
                pairs = []
                for v, s in enumerate(views.skeletons):
                    dist, j = cKDTree(uv_np[v]).query(s) if len(s) else (np.zeros(0), np.zeros(0, int))
                    ok = dist <= cover_px
                    pairs.append((skel[v][torch.as_tensor(ok, device=dev)], torch.as_tensor(j[ok], device=dev)))
        cover = x.new_zeros(())
        for v, (s, j) in enumerate(pairs):
            if len(j):
                cover = cover + ((s - uv[v, j]) ** 2).sum(dim=1).mean() / len(pairs)
        r = log_r.exp()
        r_px = r[None] / (w * ps[:, None])
        with torch.no_grad():                              # width evidence only where the point sits on vessel
            valid = (sample(to_mask, uv) <= 0.5) & (uv[..., 0] >= 0) & (uv[..., 0] <= W - 1) \
                & (uv[..., 1] >= 0) & (uv[..., 1] <= H - 1)
        width = (((r_px - (sample(half_w, uv) - 0.5).clamp(min=0.5)) ** 2) * valid).sum() / valid.sum().clamp(min=1)
        curv = ((x[i_c] - 2 * x[i_p] + x[i_g]) ** 2).sum(dim=1).mean() / step0 ** 2 if len(i_c) else x.sum() * 0
        seg = (x[e[:, 1]] - x[e[:, 0]]).norm(dim=1)
        spacing = ((seg - step0) ** 2).mean() / step0 ** 2 if len(e) else x.sum() * 0
        r_smooth = ((log_r[e[:, 1]] - log_r[e[:, 0]]) ** 2).mean() if len(e) else x.sum() * 0
        loss = data + w_cover * cover + w_radius * (width + 10 * r_smooth) + w_curv * curv + w_spacing * spacing
        loss.backward()
        opt.step()
        with torch.no_grad():
            log_r.clamp_(min=float(np.log(r_min)))
        if it % 10 == 0 or it == iterations - 1:
            history.append({"iteration": it, "loss": float(loss.detach()), "centerline_px": float(d.detach().mean()),
                            "coverage_px2": float(cover.detach())})
            progress((it + 1) / iterations, f"graph fit {it + 1}/{iterations}: {history[-1]['centerline_px']:.2f} px")
    out = PointTree(x.detach().cpu().numpy().astype(np.float64), log_r.exp().detach().cpu().numpy().astype(np.float64),
                    tree.parent.copy())
    return out, {"history": history, "final_centerline_error_px": history[-1]["centerline_px"] if history else None}


# ----------------------------------------------------------------------------- voxelisation
def tubes_to_occupancy(tree: PointTree, grid: VolumeGrid, step: float | None = None) -> np.ndarray:
    """Fractional occupancy of the union of the tree's tubes on ``grid`` (linear ramp one voxel wide)."""
    vox = float(grid.spacing.min())
    step = step or vox / 2
    e = tree.edges()
    occ = np.zeros(grid.shape, dtype=np.float32)
    if len(e) == 0:
        return occ
    a, b = tree.points[e[:, 0]], tree.points[e[:, 1]]
    ra, rb = tree.radii[e[:, 0]], tree.radii[e[:, 1]]
    k = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / step)).astype(int)
    t = np.concatenate([np.linspace(0, 1, n + 1) for n in k])
    seg = np.repeat(np.arange(len(e)), k + 1)
    s = a[seg] + (b[seg] - a[seg]) * t[:, None]
    rs = ra[seg] + (rb[seg] - ra[seg]) * t
    ijk = grid.world_to_index(s)
    near = np.zeros(grid.shape, dtype=bool)
    idx = np.rint(ijk).astype(int)
    inside = ((idx >= 0) & (idx < np.array(grid.shape[::-1]))).all(axis=1)
    near[idx[inside, 2], idx[inside, 1], idx[inside, 0]] = True
    reach = (rs.max() + vox) / vox
    near = ndimage.distance_transform_edt(~near) <= reach
    cand = np.argwhere(near)                                     # (z, y, x)
    centres = grid.index_to_world(cand[:, ::-1])
    kk = min(8, len(s))
    d, j = cKDTree(s).query(centres, k=kk)
    d, j = d.reshape(len(centres), kk), j.reshape(len(centres), kk)
    val = np.clip(0.5 + (rs[j] - d) / vox, 0.0, 1.0).max(axis=1)
    occ[cand[:, 0], cand[:, 1], cand[:, 2]] = val
    # the voxel holding each centreline sample is lumen, so tubes thinner than a voxel stay connected
    i = idx[inside]
    occ[i[:, 2], i[:, 1], i[:, 0]] = np.maximum(occ[i[:, 2], i[:, 1], i[:, 0]], 0.5)
    return occ


# ----------------------------------------------------------------------------- the whole stage
def skeleton_candidates(occupancy: np.ndarray, grid: VolumeGrid, level: float = 0.5
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Branches (world mm polylines) of the skeleton of ``occupancy >= level``, each with its median radius."""
    curves, radii = [], []
    for b in extract_centerlines(occupancy >= level, grid).branches:
        if len(b.points) >= 2:
            curves.append(b.points)
            radii.append(np.full(len(b.points), float(np.nanmedian(b.radii)) if np.isfinite(b.radii).any() else 0.5))
    return curves, radii


def piece_support(prior: np.ndarray, grid: VolumeGrid, curve: np.ndarray, step: float = 0.5) -> float:
    """Mean of ``prior`` (an occupancy in [0, 1] on ``grid``) along ``curve`` sampled every ``step`` mm."""
    pts = resample_polyline(np.asarray(curve, dtype=np.float64), np.zeros(len(curve)), step)[0]
    ijk = grid.world_to_index(pts)
    return float(ndimage.map_coordinates(prior, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=1, cval=0.0).mean())


def optimise_graph(problem: CoronaryProblem, candidate: np.ndarray, *, level: float = 0.5,
                   extra_curves: list[np.ndarray] | None = None, extra_radii: list[np.ndarray] | None = None,
                   views: ViewMaps | None = None, iterations: int = 150, device: str = "cpu",
                   intensity_weight: float = DEFAULT_WEIGHT, prior: np.ndarray | None = None,
                   selection: dict[str, Any] | None = None, record: dict[str, Any] | None = None,
                   progress: Progress | None = None) -> tuple[PointTree, dict[str, Any]]:
    """Candidate occupancy on ``problem.grid`` (+ optional candidate polylines) → one fitted tree.

    The skeleton branches of ``candidate >= level`` and ``extra_curves`` (e.g. epipolar matches)
    compete in the ghost pruning; the kept ones are joined and fitted to every view. With
    ``problem.images`` (log domain) the pruning also weighs the views' line integrals
    (``intensity_weight``; 0 = masks only). ``prior``, a learned occupancy on the grid (the hull
    refinement's), makes a piece dearer the less of it lies in that occupancy (``select_branches``'s
    ``support``). ``selection`` overrides ``select_branches``'s keyword options (ablations, e.g.
    ``{"exact_start": False}``). ``record``, when given, receives the candidate pieces the pruning
    chose from (``pieces``, world mm polylines) and the indices it kept (``kept``), for diagnostics
    that need the candidates themselves (``benchmarks/coronary_quality.py --diagnose``).
    """
    report = progress or _noop
    grid = problem.grid
    if candidate.shape != grid.shape:
        raise BadInput(f"candidate occupancy {candidate.shape} does not match the grid {grid.shape}")
    views = views or ViewMaps.from_masks(problem.masks)
    curves = list(extra_curves or [])
    radii = list(extra_radii or [])
    n_extra = len(curves)
    report(0.02, "skeletonise candidate")
    sk_curves, sk_radii = skeleton_candidates(candidate, grid, level)
    curves += sk_curves
    radii += sk_radii
    n_raw = len(curves)
    curves, radii = split_at_junctions(curves, radii, problem.geometry, views)
    report(0.2, f"prune ghosts among {len(curves)} branch pieces")
    line_integral = None
    if problem.images is not None and intensity_weight > 0:
        line_integral = vessel_line_integral(problem.images, views.half_width, views.skeletons)
    support = None
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float32)
        support = np.array([piece_support(prior, grid, c) for c in curves])
    options: dict[str, Any] = {"line_integral": line_integral, "intensity_weight": intensity_weight,
                               "support": support, **(selection or {})}
    keep, sel_info = select_branches(curves, problem.geometry, views, **options)
    if record is not None:
        record.update(pieces=curves, kept=list(keep))
    report(0.3, f"connect {len(keep)} branches")
    tree0 = connect_tree([curves[i] for i in keep], [radii[i] for i in keep], join_mm=1.5)
    fitted, fit_info = fit_tree(tree0, problem.geometry, views, iterations=iterations, device=device,
                                progress=lambda f, m: report(0.3 + 0.7 * f, m))
    info = {"extra_candidates": n_extra, "skeleton_candidates": n_raw - n_extra, "pieces": len(curves),
            "selection": sel_info,
            "fit": fit_info, "points": len(fitted.points), "components": fitted.n_components()}
    return fitted, info
