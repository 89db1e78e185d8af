"""Synthetic 3D vessel trees: smooth, tapered, Murray-consistent and collision-free, in millimetres.

Improves on the anchor's L-system (``synthetic_dsa.md`` §1.3, "What a better system would do" 5–6):

* a real turtle: every branch is grown in small steps with a parallel-transported frame
  (tangent, normal, binormal); tortuosity is an Ornstein–Uhlenbeck random walk of the curvature
  vector in the normal plane, so centrelines are smooth and persistently curved, not zig-zags;
* metric scaling: lengths are a few diameters (4–9 by default, V-System's ε) and never rescaled;
* continuous tapering inside a branch, Murray's law ``r0³ = r1³ + r2³`` at every bifurcation with a
  sampled asymmetry ``α = r2/r1``, and the Zamir optimal branching angles (cost ∝ volume, k = 3)::

      cos θ1 = [(1+α³)^(4/3) + 1 − α⁴] / [2 (1+α³)^(2/3)]
      cos θ2 = [(1+α³)^(4/3) + α⁴ − 1] / [2 α² (1+α³)^(2/3)]

* collision avoidance: a new branch whose tube comes closer than ``r1 + r2 + margin`` to any
  non-adjacent existing tube is regrown (or truncated); "adjacent" means the two points are joined
  through the tree by a path shorter than ``EXEMPT_FACTOR·(r1 + r2)`` (tubes at a junction touch);
* placement: growth inside a region mask (e.g. a dilated body/organ mask from a CT) with steering
  along the gradient of its distance map, or on a heart-sized ellipsoid (coronary mode: LM → LAD +
  LCX, and RCA, with diagonals/marginals).

A :class:`VesselTree` is a forest in graph form: node positions (world mm), radii, parent index,
path length from the root (for contrast timing) and branch ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BadInput
from ..geometry import VolumeGrid

#: pairs of points joined through the tree by less than this × (r1 + r2) are "adjacent" tubes.
EXEMPT_FACTOR = 4.0


# ============================================================================ tree container
@dataclass(eq=False)
class VesselTree:
    """A vessel forest: node ``k`` is joined to ``parent[k]`` (−1 for a root) by a tapered tube.

    The tube from ``parent[k]`` to ``k`` has radius ``radii[parent[k]]`` → ``radii[k]`` when both
    nodes are in the same branch, and ``radii[k]`` at both ends for the first node of a child
    branch (the child's calibre starts at the junction; Murray's law holds at the junction node).
    """

    nodes: np.ndarray          #: (K, 3) world positions, mm
    radii: np.ndarray          #: (K,) radius at each node, mm
    parent: np.ndarray         #: (K,) parent node index, −1 for roots
    path_length: np.ndarray    #: (K,) distance from the root along the tree, mm
    segment: np.ndarray        #: (K,) branch id of each node
    branch_parent: np.ndarray  #: (B,) parent branch of each branch, −1 for root branches
    branch_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes = np.asarray(self.nodes, dtype=np.float64).reshape(-1, 3)
        k = self.nodes.shape[0]
        self.radii = np.asarray(self.radii, dtype=np.float64).reshape(k)
        self.parent = np.asarray(self.parent, dtype=np.int64).reshape(k)
        self.path_length = np.asarray(self.path_length, dtype=np.float64).reshape(k)
        self.segment = np.asarray(self.segment, dtype=np.int64).reshape(k)
        self.branch_parent = np.asarray(self.branch_parent, dtype=np.int64).reshape(-1)
        if k and (self.parent.max() >= k or np.any(self.parent >= np.arange(k))):
            raise BadInput("vessel tree parents must precede their children")
        if not self.branch_names:
            self.branch_names = [f"branch_{b}" for b in range(self.n_branches)]

    # ---------------------------------------------------------------- structure
    @property
    def n_nodes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def n_branches(self) -> int:
        return int(self.branch_parent.shape[0])

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, ra, rb): parent/child node indices and tube radii at both ends of every edge."""
        child = np.nonzero(self.parent >= 0)[0]
        par = self.parent[child]
        same = self.segment[par] == self.segment[child]
        ra = np.where(same, self.radii[par], self.radii[child])
        return par, child, ra, self.radii[child].copy()

    def branch_polylines(self) -> list[np.ndarray]:
        """Node indices of each branch in order, starting at its junction node (so curves connect)."""
        out = []
        for b in range(self.n_branches):
            idx = np.nonzero(self.segment == b)[0]
            if idx.size and self.parent[idx[0]] >= 0:
                idx = np.concatenate([[self.parent[idx[0]]], idx])
            out.append(idx)
        return out

    def bifurcations(self) -> list[tuple[int, list[int]]]:
        """(junction node, [first node of each daughter branch]) for every branching point.

        A branch ends at its bifurcation, so the daughters are the only continuations of a junction.
        """
        kids: dict[int, list[int]] = {}
        for k in np.nonzero(self.parent >= 0)[0]:
            p = int(self.parent[k])
            if self.segment[p] != self.segment[k]:
                kids.setdefault(p, []).append(int(k))
        return sorted(kids.items())

    def murray_residuals(self) -> np.ndarray:
        """Relative residual ``(r0³ − Σ ri³)/r0³`` at every junction with two grown daughters.

        Junctions where a daughter was not grown (thinner than ``min_radius`` or blocked by a
        collision) are vessel ends of that daughter and are skipped.
        """
        res = []
        for j, kids in self.bifurcations():
            if len(kids) < 2:
                continue
            r0 = self.radii[j] ** 3
            res.append((r0 - sum(self.radii[k] ** 3 for k in kids)) / r0)
        return np.asarray(res)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box of all tubes (min, max), mm."""
        r = self.radii[:, None]
        return (self.nodes - r).min(axis=0), (self.nodes + r).max(axis=0)

    def transformed(self, matrix: np.ndarray) -> "VesselTree":
        """The tree moved by a rigid 4×4 world transform (radii and path lengths unchanged)."""
        m = np.asarray(matrix, dtype=np.float64)
        return VesselTree(self.nodes @ m[:3, :3].T + m[:3, 3], self.radii, self.parent, self.path_length,
                          self.segment, self.branch_parent, list(self.branch_names), dict(self.meta))

    def total_length(self) -> float:
        a, b, _, _ = self.edges()
        return float(np.linalg.norm(self.nodes[b] - self.nodes[a], axis=1).sum())

    def write_centerlines(self, path: str | Path) -> Path:
        """One Slicer markups curve per branch (from its junction), with a per-point ``Radius``."""
        from ..formats.markups import write_markups_curves

        polys = [p for p in self.branch_polylines() if p.size >= 2]
        return write_markups_curves(path, [self.nodes[p] for p in polys], [self.radii[p] for p in polys],
                                    [self.branch_names[int(self.segment[p[-1]])] for p in polys])

    # ---------------------------------------------------------------- geodesics / clearance
    def _branch_chain(self, b: int) -> list[int]:
        chain = [b]
        while self.branch_parent[chain[-1]] >= 0:
            chain.append(int(self.branch_parent[chain[-1]]))
        return chain

    def geodesic(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Path length through the tree between node pairs (inf between different roots' trees)."""
        i = np.asarray(i, dtype=np.int64).reshape(-1)
        j = np.asarray(j, dtype=np.int64).reshape(-1)
        first = _branch_first_nodes(self)
        out = np.empty(i.size)
        for n, (a, b) in enumerate(zip(i, j)):
            out[n] = _pair_geodesic(self, int(a), int(b), first)
        return out

    def clearance(self, exempt_factor: float = EXEMPT_FACTOR) -> float:
        """Minimum of ``distance − r1 − r2`` over all pairs of non-adjacent tubes (> 0: no overlap).

        Tubes use their larger end radius (a capsule containing the tapered frustum).
        """
        from scipy.spatial import cKDTree

        a, b, ra, rb = self.edges()
        if a.size < 2:
            return float("inf")
        r = np.maximum(ra, rb)
        mid = 0.5 * (self.nodes[a] + self.nodes[b])
        half = 0.5 * np.linalg.norm(self.nodes[b] - self.nodes[a], axis=1)
        reach = float(2 * (half.max() + r.max()))
        pairs = cKDTree(mid).query_pairs(reach, output_type="ndarray")
        if pairs.size == 0:
            return float("inf")
        p, q = pairs[:, 0], pairs[:, 1]
        d = segment_distance(self.nodes[a[p]], self.nodes[b[p]], self.nodes[a[q]], self.nodes[b[q]])
        gap = d - r[p] - r[q]
        close = gap < 2 * r.max()
        if not np.any(close):
            return float(gap.min())
        p, q, gap = p[close], q[close], gap[close]
        geo = self.geodesic(b[p], b[q])
        keep = geo >= exempt_factor * (r[p] + r[q])
        return float(gap[keep].min()) if np.any(keep) else float("inf")

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"format": "angiorecon.VesselTree/1", "nodes": self.nodes.tolist(), "radii": self.radii.tolist(),
                "parent": self.parent.tolist(), "path_length": self.path_length.tolist(),
                "segment": self.segment.tolist(), "branch_parent": self.branch_parent.tolist(),
                "branch_names": list(self.branch_names), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VesselTree":
        try:
            return cls(d["nodes"], d["radii"], d["parent"], d["path_length"], d["segment"], d["branch_parent"],
                       list(d.get("branch_names", [])), dict(d.get("meta", {})))
        except KeyError as exc:
            raise BadInput(f"vessel tree JSON lacks the key {exc.args[0]!r}") from None

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load_json(cls, path: str | Path) -> "VesselTree":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"cannot read vessel tree {path}: {exc}") from None


def _branch_first_nodes(tree: VesselTree) -> np.ndarray:
    first = np.full(tree.n_branches, -1, dtype=np.int64)
    for k in range(tree.n_nodes - 1, -1, -1):
        first[tree.segment[k]] = k
    return first


def _pair_geodesic(tree: VesselTree, i: int, j: int, first: np.ndarray) -> float:
    """Geodesic distance via the lowest common ancestor, walking branch chains (few levels)."""
    bi, bj = int(tree.segment[i]), int(tree.segment[j])
    ci, cj = tree._branch_chain(bi), tree._branch_chain(bj)
    if ci[-1] != cj[-1]:
        return float("inf")
    set_j = set(cj)
    common = next(c for c in ci if c in set_j)

    def exit_len(chain: list[int], node: int) -> float:
        # path length where the chain leaves the common branch (the junction of the next branch)
        k = chain.index(common)
        if k == 0:
            return float(tree.path_length[node])
        nxt = chain[k - 1]
        return float(tree.path_length[tree.parent[first[nxt]]])

    s_lca = min(exit_len(ci, i), exit_len(cj, j))
    return float(tree.path_length[i] + tree.path_length[j] - 2 * s_lca)


# ============================================================================ geometry helpers
def segment_distance(p1: np.ndarray, q1: np.ndarray, p2: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Vectorised minimum distance between segments ``[p1, q1]`` and ``[p2, q2]`` (… × 3 arrays)."""
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a = np.einsum("...i,...i->...", d1, d1)
    e = np.einsum("...i,...i->...", d2, d2)
    f = np.einsum("...i,...i->...", d2, r)
    c = np.einsum("...i,...i->...", d1, r)
    b = np.einsum("...i,...i->...", d1, d2)
    eps = 1e-12
    denom = a * e - b * b
    s = np.where(denom > eps, np.clip((b * f - c * e) / np.maximum(denom, eps), 0.0, 1.0), 0.0)
    s = np.where(a > eps, s, 0.0)
    t = np.where(e > eps, (b * s + f) / np.maximum(e, eps), 0.0)
    # clamp t and recompute s where needed
    t_lo, t_hi = t < 0, t > 1
    t = np.clip(t, 0.0, 1.0)
    s = np.where(t_lo & (a > eps), np.clip(-c / np.maximum(a, eps), 0.0, 1.0), s)
    s = np.where(t_hi & (a > eps), np.clip((b - c) / np.maximum(a, eps), 0.0, 1.0), s)
    c1 = p1 + s[..., None] * d1
    c2 = p2 + t[..., None] * d2
    return np.linalg.norm(c1 - c2, axis=-1)


def zamir_angles(alpha: float) -> tuple[float, float]:
    """Optimal branching angles (θ1 to the larger child, θ2 to the smaller), radians, for α = r2/r1 ≤ 1."""
    a = float(np.clip(alpha, 1e-3, 1.0))
    s = 1.0 + a ** 3
    c1 = (s ** (4 / 3) + 1 - a ** 4) / (2 * s ** (2 / 3))
    c2 = (s ** (4 / 3) + a ** 4 - 1) / (2 * a ** 2 * s ** (2 / 3))
    return float(np.arccos(np.clip(c1, -1, 1))), float(np.arccos(np.clip(c2, -1, 1)))


def murray_split(r0: float, alpha: float) -> tuple[float, float]:
    """Daughter radii with ``r0³ = r1³ + r2³`` and ``r2 = α·r1``."""
    r1 = r0 / (1.0 + alpha ** 3) ** (1 / 3)
    return r1, alpha * r1


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about the unit ``axis``."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1 - c)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def _perp(t: np.ndarray) -> np.ndarray:
    a = np.array([1.0, 0, 0]) if abs(t[0]) < 0.9 else np.array([0, 1.0, 0])
    return _unit(a - np.dot(a, t) * t)


# ============================================================================ region (where trees may grow)
class Region:
    """Where vessels may lie: a mask's inside distance map (mm) with its gradient, sampled at points.

    ``distance(p) ≥ r`` means a tube of radius ``r`` centred at ``p`` is inside the region.
    """

    def __init__(self, mask: np.ndarray, grid: VolumeGrid) -> None:
        from scipy.ndimage import distance_transform_edt

        m = np.asarray(mask, dtype=bool)
        if m.shape != grid.shape:
            raise BadInput(f"region mask shape {m.shape} does not match its grid {grid.shape}")
        if not m.any():
            raise BadInput("region mask is empty: there is nowhere to grow vessels")
        sp = grid.spacing[::-1]  # z, y, x
        self.grid = grid
        self.dist = distance_transform_edt(m, sampling=sp).astype(np.float32)
        gz, gy, gx = np.gradient(self.dist, *sp)
        # gradient in world coordinates (direction columns map index axes to world)
        self._grad = np.stack([gx, gy, gz], axis=-1).astype(np.float32)
        self._dir = grid.direction
        self._inv = np.linalg.inv(grid.affine)

    def _index(self, p: np.ndarray) -> tuple[int, int, int] | None:
        ijk = self._inv[:3, :3] @ p + self._inv[:3, 3]
        i, j, k = (int(round(x)) for x in ijk)
        nz, ny, nx = self.dist.shape
        if 0 <= i < nx and 0 <= j < ny and 0 <= k < nz:
            return k, j, i
        return None

    def distance(self, p: np.ndarray) -> float:
        idx = self._index(p)
        return float(self.dist[idx]) if idx is not None else -1.0

    def inward(self, p: np.ndarray) -> np.ndarray:
        """Unit direction of increasing distance (into the region), world frame."""
        idx = self._index(p)
        if idx is None:
            return _unit(self.grid.center - p)
        return _unit(self._dir @ self._grad[idx].astype(np.float64))

    def deepest_point(self) -> np.ndarray:
        k, j, i = np.unravel_index(int(np.argmax(self.dist)), self.dist.shape)
        return self.grid.index_to_world([[i, j, k]])[0]

    def random_point(self, rng: np.random.Generator, min_distance: float) -> np.ndarray:
        cand = np.argwhere(self.dist >= min_distance)
        if cand.size == 0:
            raise BadInput(f"region has no point at least {min_distance:g} mm from its boundary")
        k, j, i = cand[rng.integers(len(cand))]
        return self.grid.index_to_world([[i, j, k]])[0]


# ============================================================================ growth parameters
@dataclass
class TreeParams:
    """Parameters of the stochastic tree grower (lengths in mm)."""

    root_radius: float = 4.0
    min_radius: float = 0.5                        #: branches thinner than this are not grown
    max_radius: float = 15.0
    length_diameters: tuple[float, float] = (4.0, 9.0)  #: branch length in parent diameters (V-System ε)
    min_length: float = 4.0
    taper: tuple[float, float] = (0.0, 0.15)       #: fraction of radius lost along a branch
    asymmetry: tuple[float, float] = (0.45, 1.0)   #: α = r2/r1 at bifurcations
    angle_jitter_deg: float = 5.0
    tortuosity: float = 0.3                        #: curvature std ≈ tortuosity / (6 r)
    max_generations: int = 8
    max_branches: int = 300
    collision_margin: float = 0.5
    max_attempts: int = 4
    region_margin: float = 1.0                      #: keep tubes this far inside the region

    def validate(self) -> None:
        if not 0 < self.min_radius <= self.root_radius <= self.max_radius:
            raise BadInput(f"need 0 < min_radius ≤ root_radius ≤ max_radius, got {self.min_radius}, "
                           f"{self.root_radius}, {self.max_radius}")
        lo, hi = self.asymmetry
        if not 0 < lo <= hi <= 1:
            raise BadInput(f"asymmetry range must lie in (0, 1], got {self.asymmetry}")


Guide = Callable[[np.ndarray, np.ndarray, int], np.ndarray | None]
Constraint = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Pending:
    start: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray
    radius: float
    generation: int
    parent_branch: int
    attach_node: int
    guide_id: int
    name: str
    length: float | None = None                    #: fixed branch length (else drawn from the params)
    children: tuple[tuple[int, str], tuple[int, str]] | None = None  #: (guide id, name) of the daughters
    alpha: tuple[float, float] | None = None       #: asymmetry range of this branch's bifurcation


class TreeGrower:
    """Grows one forest branch by branch (breadth first) with collision checks against all tubes so far."""

    def __init__(self, params: TreeParams, rng: np.random.Generator, region: Region | None = None,
                 guide: Guide | None = None, constraint: Constraint | None = None,
                 guide_weight: float = 0.0) -> None:
        params.validate()
        self.p = params
        self.rng = rng
        self.region = region
        self.guide = guide
        self.constraint = constraint
        self.guide_weight = guide_weight
        self.nodes: list[np.ndarray] = []
        self.radii: list[float] = []
        self.parent: list[int] = []
        self.plen: list[float] = []
        self.seg: list[int] = []
        self.bparent: list[int] = []
        self.bnames: list[str] = []
        self.battach: list[int] = []
        self.queue: list[_Pending] = []

    # ---------------------------------------------------------------- public
    def add_root(self, start: np.ndarray, direction: np.ndarray, radius: float, name: str = "root",
                 guide_id: int = 0, length: float | None = None,
                 children: tuple[tuple[int, str], tuple[int, str]] | None = None,
                 alpha: tuple[float, float] | None = None) -> None:
        t = _unit(np.asarray(direction, dtype=np.float64))
        self.queue.append(_Pending(np.asarray(start, dtype=np.float64), t, _perp(t), float(radius), 0, -1, -1,
                                   guide_id, name, length, children, alpha))

    def grow(self) -> VesselTree:
        while self.queue and len(self.bparent) < self.p.max_branches:
            self._grow_branch(self.queue.pop(0))
        tree = VesselTree(np.asarray(self.nodes).reshape(-1, 3), self.radii, self.parent, self.plen, self.seg,
                          self.bparent, self.bnames, {"generator": "angiorecon.TreeGrower",
                                                      "params": self.p.__dict__.copy()})
        return tree

    # ---------------------------------------------------------------- one branch
    def _trace(self, job: _Pending, length: float, r_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray, bool]:
        """Turtle walk: positions, radii, final tangent/normal; ``ok`` False if it left the region early."""
        p = self.p
        r0 = job.radius
        pos, t, n = job.start.copy(), job.tangent.copy(), job.normal.copy()
        kappa = np.zeros(2)
        pts, rads = [], []
        s = 0.0
        ok = True
        while s < length - 1e-9:
            r = r0 + (r_end - r0) * (s / length)
            ds = min(float(np.clip(0.75 * r, 0.4, 2.0)), length - s)
            lc = max(6.0 * r, 3.0)
            sigma = p.tortuosity / max(6.0 * r, 1.0)
            decay = np.exp(-ds / lc)
            kappa = kappa * decay + sigma * np.sqrt(1 - decay ** 2) * self.rng.standard_normal(2)
            b = np.cross(t, n)
            t_new = t + ds * (kappa[0] * n + kappa[1] * b)
            if self.guide is not None and self.guide_weight > 0:
                g = self.guide(pos, t, job.guide_id)
                if g is not None:
                    t_new = t_new + self.guide_weight * ds / max(10.0 * r, 5.0) * (g - np.dot(g, t) * t)
            if self.region is not None:
                d = self.region.distance(pos)
                if d < r + p.region_margin + 3 * ds:
                    w = np.clip((r + p.region_margin + 3 * ds - d) / (3 * ds), 0, 1)
                    inward = self.region.inward(pos)
                    t_new = t_new + 0.5 * w * (inward - np.dot(inward, t) * t)
            t_new = _unit(t_new)
            new_pos = pos + ds * t_new
            if self.constraint is not None:
                new_pos, t_new = self.constraint(new_pos, t_new, r)
            if self.region is not None and self.region.distance(new_pos) < r_end + p.region_margin * 0.5:
                ok = False
                break
            # parallel transport of the normal
            n = _unit(n - np.dot(n, t_new) * t_new)
            t, pos = t_new, new_pos
            s += ds
            pts.append(pos.copy())
            rads.append(r0 + (r_end - r0) * min(s / length, 1.0))
        return np.asarray(pts).reshape(-1, 3), np.asarray(rads), t, n, ok

    def _collides(self, job: _Pending, pts: np.ndarray, rads: np.ndarray) -> int:
        """Index of the first new point whose tube hits an existing non-adjacent tube (−1 if none)."""
        if not self.nodes or pts.shape[0] == 0:
            return -1
        p = self.p
        all_nodes = np.asarray(self.nodes)
        par = np.asarray(self.parent)
        child = np.nonzero(par >= 0)[0]
        starts_new = np.vstack([job.start[None], pts[:-1]])
        r_new = rads
        s0 = self.plen[job.attach_node] if job.attach_node >= 0 else 0.0
        s_new = s0 + np.cumsum(np.linalg.norm(pts - starts_new, axis=1))
        if child.size:
            seg = np.asarray(self.seg)
            rad = np.asarray(self.radii)
            a, b = par[child], child
            r_old = np.maximum(np.where(seg[a] == seg[b], rad[a], rad[b]), rad[b])
            lo = np.minimum(all_nodes[a], all_nodes[b]) - r_old[:, None]
            hi = np.maximum(all_nodes[a], all_nodes[b]) + r_old[:, None]
            nlo = np.minimum(starts_new, pts).min(axis=0) - r_new.max() - p.collision_margin
            nhi = np.maximum(starts_new, pts).max(axis=0) + r_new.max() + p.collision_margin
            cand = np.nonzero(np.all(hi >= nlo, axis=1) & np.all(lo <= nhi, axis=1))[0]
        else:
            cand = np.zeros(0, dtype=np.int64)
        first_hit = pts.shape[0]
        if cand.size:
            a, b, r_old = a[cand], b[cand], r_old[cand]
            lca = self._lca_lengths(job, b)
            s_old = np.asarray(self.plen)[b]
            d = segment_distance(starts_new[:, None], pts[:, None], all_nodes[a][None], all_nodes[b][None])
            geo = (s_new[:, None] - lca[None]) + (s_old[None] - lca[None])
            hit = (d < r_new[:, None] + r_old[None] + p.collision_margin) & \
                  (geo >= EXEMPT_FACTOR * (r_new[:, None] + r_old[None]))
            rows = np.nonzero(hit.any(axis=1))[0]
            if rows.size:
                first_hit = int(rows[0])
        # self-collision of a tortuous branch
        if pts.shape[0] > 4:
            d = segment_distance(starts_new[:, None], pts[:, None], starts_new[None], pts[None])
            geo = np.abs(s_new[:, None] - s_new[None])
            rr = r_new[:, None] + r_new[None]
            hit = (d < rr + p.collision_margin) & (geo >= EXEMPT_FACTOR * rr)
            rows = np.nonzero(hit.any(axis=1))[0]
            if rows.size:
                first_hit = min(first_hit, int(rows[0]))
        return -1 if first_hit == pts.shape[0] else first_hit

    def _lca_lengths(self, job: _Pending, nodes: np.ndarray) -> np.ndarray:
        """Path length of the lowest common ancestor of each existing node with the new branch.

        −inf for nodes in other trees of the forest (never adjacent).
        """
        if job.attach_node < 0:
            return np.full(nodes.size, -np.inf)
        # chain of branches from the new branch's parent up to its root, with exit lengths
        exit_len: dict[int, float] = {}
        b, s_exit = job.parent_branch, self.plen[job.attach_node]
        while b >= 0:
            exit_len[b] = s_exit
            attach = self.battach[b]
            s_exit = self.plen[attach] if attach >= 0 else 0.0
            b = self.bparent[b]
        seg = np.asarray(self.seg)[nodes]
        plen = np.asarray(self.plen)[nodes]
        out = np.empty(nodes.size)
        cache: dict[int, tuple[int, float]] = {}
        for n, (c, s) in enumerate(zip(seg, plen)):
            c = int(c)
            if c in exit_len:
                out[n] = min(s, exit_len[c])
                continue
            if c not in cache:
                cur, leave = c, np.inf
                while cur >= 0 and cur not in exit_len:
                    attach = self.battach[cur]
                    leave = self.plen[attach] if attach >= 0 else 0.0
                    cur = self.bparent[cur]
                cache[c] = (cur, leave)
            cur, leave = cache[c]
            out[n] = -np.inf if cur < 0 else min(exit_len[cur], leave)
        return out

    def _grow_branch(self, job: _Pending) -> None:
        p = self.p
        if job.radius < p.min_radius:
            return
        best: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        for attempt in range(p.max_attempts):
            if job.length is not None:
                length = job.length
            else:
                length = max(self.rng.uniform(*p.length_diameters) * 2 * job.radius, p.min_length)
            r_end = max(job.radius * (1 - self.rng.uniform(*p.taper)), p.min_radius)
            pts, rads, t, n, ok = self._trace(job, length, r_end)
            if rads.size:
                rads[0] = job.radius  # the daughter's calibre at its first node is the Murray radius
            hit = self._collides(job, pts, rads)
            if hit < 0:
                if pts.shape[0] and (best is None or ok or pts.shape[0] > best[0].shape[0]):
                    best = (pts, rads, t, n, ok)
                if ok:
                    break
            else:
                # keep the collision-free prefix (truncate instead of drop) if it is the longest so far
                back = int(np.ceil(2 * (rads[0] + p.collision_margin) / max(0.75 * rads[0], 0.4)))
                keep = hit - back
                if keep >= 2 and (best is None or keep > best[0].shape[0]):
                    tn = _unit(pts[keep - 1] - pts[keep - 2])
                    best = (pts[:keep], rads[:keep], tn, _perp(tn), False)
            if attempt < p.max_attempts - 1:  # retry with a slightly different heading
                job.tangent = _unit(job.tangent + 0.3 * self.rng.standard_normal(3))
                job.normal = _perp(job.tangent)
        if best is None:
            return
        pts, rads, t, n, complete = best
        b = len(self.bparent)
        self.bparent.append(job.parent_branch)
        self.battach.append(job.attach_node)
        self.bnames.append(job.name)
        prev = job.attach_node
        s = self.plen[prev] if prev >= 0 else 0.0
        last = job.start
        if prev < 0:  # root branch: its first node is the start point itself
            self._add_node(job.start.copy(), float(rads[0]), -1, 0.0, b)
            prev = len(self.nodes) - 1
        for q, r in zip(pts, rads):
            s += float(np.linalg.norm(q - last))
            self._add_node(q, float(r), prev, s, b)
            prev = len(self.nodes) - 1
            last = q
        if complete and job.generation + 1 < p.max_generations:
            self._bifurcate(job, prev, t, n, b)

    def _add_node(self, q: np.ndarray, r: float, parent: int, s: float, branch: int) -> None:
        self.nodes.append(np.asarray(q, dtype=np.float64))
        self.radii.append(r)
        self.parent.append(parent)
        self.plen.append(s)
        self.seg.append(branch)

    def _bifurcate(self, job: _Pending, node: int, t: np.ndarray, n: np.ndarray, branch: int) -> None:
        p = self.p
        r0 = self.radii[node]
        alpha = self.rng.uniform(*(job.alpha or p.asymmetry))
        r1, r2 = murray_split(r0, alpha)
        th1, th2 = zamir_angles(alpha)
        jit = np.deg2rad(p.angle_jitter_deg)
        th1 = max(th1 + jit * self.rng.standard_normal(), 0.0)
        th2 = max(th2 + jit * self.rng.standard_normal(), 0.05)
        b = np.cross(t, n)
        best_phi, best_score = 0.0, -np.inf
        for phi in self.rng.uniform(0, 2 * np.pi, 6 if self.region is not None else 1):
            w = np.cos(phi) * n + np.sin(phi) * b
            d1, d2 = _rotate(t, w, th1), _rotate(t, w, -th2)
            if self.region is None:
                best_phi = phi
                break
            pos = self.nodes[node]
            look = 4 * r0 + 5.0
            score = min(self.region.distance(pos + look * d1) - r1, self.region.distance(pos + look * d2) - r2)
            if score > best_score:
                best_phi, best_score = phi, score
        w = np.cos(best_phi) * n + np.sin(best_phi) * b
        kids = job.children or ((job.guide_id, f"{job.name}.a"), (_side_guide(job.guide_id), f"{job.name}.b"))
        for r, th, sign, (gid, name) in ((r1, th1, 1.0, kids[0]), (r2, th2, -1.0, kids[1])):
            if r < p.min_radius:
                continue
            d = _rotate(t, w, sign * th)
            if job.children is not None and self.guide is not None:
                # named daughters (LAD/LCX) leave the junction along their own guides
                g = self.guide(np.asarray(self.nodes[node]), t, gid)
                if g is not None:
                    d = _unit(g)
                    if self.constraint is not None:
                        d = self.constraint(np.asarray(self.nodes[node]), d, r)[1]
            self.queue.append(_Pending(np.asarray(self.nodes[node]), d, _unit(w - np.dot(w, d) * d), r,
                                       job.generation + 1, branch, node, gid, name))


def _side_guide(guide_id: int) -> int:
    """Side branches of a guided vessel follow the generic 'side' guide (id ≥ 100)."""
    return 100 + guide_id % 100


# ============================================================================ public generators
def grow_tree(rng: np.random.Generator | int, *, params: TreeParams | None = None,
              region_mask: np.ndarray | None = None, grid: VolumeGrid | None = None,
              root: Sequence[float] | None = None, direction: Sequence[float] | None = None) -> VesselTree:
    """One random tree (world mm). With ``region_mask`` + ``grid`` it grows inside the mask.

    The root defaults to the deepest point of the region (or the origin), the initial direction to a
    random unit vector. Deterministic for a given seed.
    """
    rng = np.random.default_rng(rng)
    params = params or TreeParams()
    region = None
    if region_mask is not None:
        if grid is None:
            raise BadInput("grow_tree: a region mask needs its VolumeGrid")
        region = Region(region_mask, grid)
    if root is None:
        root = region.random_point(rng, params.root_radius * 3 + params.region_margin) if region else np.zeros(3)
    d = np.asarray(direction, dtype=np.float64) if direction is not None else rng.standard_normal(3)
    if region is not None and direction is None:
        # start roughly along the region's long extent away from the boundary
        d = _unit(d) + 0.5 * region.inward(np.asarray(root, dtype=np.float64))
    g = TreeGrower(params, rng, region)
    g.add_root(np.asarray(root, dtype=np.float64), d, params.root_radius)
    return g.grow()


@dataclass
class HeartModel:
    """Ellipsoidal epicardium (LPS world): centre, unit apex direction and semi-axes (long, short1, short2)."""

    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    apex_dir: np.ndarray = field(default_factory=lambda: _unit(np.array([0.6, -0.45, -0.65])))
    semi_axes: tuple[float, float, float] = (55.0, 45.0, 40.0)

    def frame(self) -> np.ndarray:
        """Columns: apex direction, anterior-most short axis, third axis pointing to the patient's left-ish."""
        a = _unit(np.asarray(self.apex_dir, dtype=np.float64))
        ant = np.array([0.0, -1.0, 0.0])
        e1 = _unit(ant - np.dot(ant, a) * a)
        e2 = np.cross(a, e1)
        if e2[0] < 0:
            e2 = -e2
        return np.stack([a, e1, e2], axis=1)

    def _m(self) -> np.ndarray:
        return self.frame() * np.asarray(self.semi_axes)[None, :]

    def surface_point(self, h: float, phi: float) -> np.ndarray:
        """Point at normalised height ``h`` ∈ [−1 (base), 1 (apex)] and azimuth ``phi`` (0 = anterior)."""
        rho = np.sqrt(max(1 - h * h, 0.0))
        return np.asarray(self.center) + self._m() @ np.array([h, rho * np.cos(phi), rho * np.sin(phi)])

    def project(self, p: np.ndarray, t: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
        """Snap a point onto the surface (radially, offset by the vessel radius) and ``t`` onto its tangent plane."""
        m = self._m()
        q = np.linalg.solve(m, p - self.center)
        qn = q / max(np.linalg.norm(q), 1e-9)
        p_s = self.center + m @ qn
        normal = _unit(np.linalg.solve(m.T, qn))
        p_new = p_s + r * normal
        t_new = _unit(t - np.dot(t, normal) * normal)
        return p_new, t_new

    def apex(self) -> np.ndarray:
        return np.asarray(self.center) + self.semi_axes[0] * _unit(np.asarray(self.apex_dir))


def grow_coronary_tree(rng: np.random.Generator | int, *, heart: HeartModel | None = None,
                       side: str = "both", params: TreeParams | None = None) -> VesselTree:
    """Coronary-like forest on an ellipsoidal heart: left (LM → LAD + LCX) and/or right (RCA) trees.

    LAD follows the anterior groove toward the apex, LCX and RCA run around the base (AV groove) in
    opposite directions; side branches (diagonals, marginals) head apically. Proximal radii are drawn
    in 1.5–2.2 mm (3–4.4 mm diameters), distal branches stop at ``min_radius`` (default 0.4 mm).
    """
    rng = np.random.default_rng(rng)
    heart = heart or HeartModel()
    params = params or TreeParams(min_radius=0.4, root_radius=2.0, length_diameters=(6.0, 14.0),
                                  asymmetry=(0.3, 0.7), tortuosity=0.25, max_generations=8,
                                  max_branches=120, taper=(0.03, 0.12))
    frame = heart.frame()
    apex_dir = frame[:, 0]

    def guide(pos: np.ndarray, t: np.ndarray, gid: int) -> np.ndarray | None:
        rel = pos - heart.center
        radial = rel - np.dot(rel, apex_dir) * apex_dir
        e_phi = _unit(np.cross(apex_dir, radial))  # increasing azimuth (anterior → left)
        if gid == 1:        # LAD: to the apex
            return _unit(heart.apex() - pos)
        if gid == 2:        # LCX: around the base toward the left/posterior
            return _unit(e_phi + 0.15 * apex_dir)
        if gid == 3:        # RCA: around the base the other way (right → posterior)
            return _unit(-e_phi + 0.2 * apex_dir)
        return _unit(heart.apex() - pos + 0.3 * np.linalg.norm(heart.apex() - pos) * t)

    if side not in ("left", "right", "both"):
        raise BadInput(f"coronary side must be 'left', 'right' or 'both', got {side!r}")
    # one grower for both trees, so the left and right trees are collision-checked against each other
    g = TreeGrower(params, rng, None, guide, heart.project, guide_weight=2.0)
    if side in ("left", "both"):
        r_lm = rng.uniform(1.9, 2.2)
        start = heart.surface_point(-0.8, np.deg2rad(25))
        # a short left main that bifurcates into the LAD (guide 1) and the LCX (guide 2)
        g.add_root(start, _unit(heart.surface_point(-0.7, np.deg2rad(40)) - start), r_lm, "LM", guide_id=1,
                   length=float(rng.uniform(8, 14)), children=((1, "LAD"), (2, "LCX")), alpha=(0.75, 0.95))
    if side in ("right", "both"):
        start = heart.surface_point(-0.8, np.deg2rad(-35))
        r_rca = rng.uniform(1.6, 2.0)
        g.add_root(start, _unit(heart.surface_point(-0.75, np.deg2rad(-60)) - start), r_rca, "RCA", guide_id=3)
    forest = g.grow()
    forest.meta.update({"kind": "coronary", "heart": {"center": np.asarray(heart.center).tolist(),
                                                      "apex_dir": np.asarray(heart.apex_dir).tolist(),
                                                      "semi_axes": list(heart.semi_axes)}})
    return forest


# ============================================================================ pathology
def add_lesions(tree: VesselTree, rng: np.random.Generator | int, *, stenoses: int = 0, aneurysms: int = 0,
                severity: tuple[float, float] = (0.3, 0.7), stenosis_length: tuple[float, float] = (4.0, 12.0),
                aneurysm_radius: tuple[float, float] = (1.5, 4.0), min_vessel_radius: float = 1.0
                ) -> tuple[VesselTree, list[dict[str, Any]]]:
    """The tree with stenoses (smooth local narrowings) and saccular aneurysms, plus their truth.

    A stenosis multiplies a branch's radii by ``1 − s·exp(−½(Δs/σ)²)`` around a point at path length
    ``s0`` (``s`` = diameter reduction drawn in ``severity``, FWHM drawn in ``stenosis_length``,
    truncated at ±3σ), placed ≥ 3σ from both branch ends so the calibres at junctions (Murray's law)
    are untouched. An aneurysm
    is a sac of radius 1–2 × the vessel radius (clipped to ``aneurysm_radius``) on the side of a
    vessel: a one-edge daughter branch from the wall to the sac centre. Only vessels with radius
    ≥ ``min_vessel_radius`` are affected. Returns (new tree, lesions with kind, branch, node,
    position and size).
    """
    rng = np.random.default_rng(rng)
    radii = tree.radii.copy()
    lesions: list[dict[str, Any]] = []
    k_all = np.arange(tree.n_nodes)
    same_parent = (tree.parent >= 0) & (tree.segment[np.maximum(tree.parent, 0)] == tree.segment)
    has_same_child = np.zeros(tree.n_nodes, bool)
    has_same_child[tree.parent[same_parent]] = True
    interior = k_all[same_parent & has_same_child & (tree.radii >= min_vessel_radius)]
    if (stenoses or aneurysms) and interior.size == 0:
        raise BadInput(f"no vessel of radius ≥ {min_vessel_radius:g} mm to place lesions on")
    s_lo = np.full(tree.n_branches, np.inf)
    s_hi = np.full(tree.n_branches, -np.inf)
    np.minimum.at(s_lo, tree.segment, tree.path_length)
    np.maximum.at(s_hi, tree.segment, tree.path_length)
    placed = 0
    for _ in range(50 * max(stenoses, 1)):
        if placed >= stenoses:
            break
        k = int(rng.choice(interior))
        sigma = float(rng.uniform(*stenosis_length)) / 2.355
        b = tree.segment[k]
        if tree.path_length[k] - 3 * sigma < s_lo[b] or tree.path_length[k] + 3 * sigma > s_hi[b]:
            continue
        s_red = float(rng.uniform(*severity))
        z = (tree.path_length - tree.path_length[k]) / sigma
        prof = np.where(np.abs(z) < 3.0, 1.0 - s_red * np.exp(-0.5 * z ** 2), 1.0)  # truncated at ±3σ
        radii = np.where(tree.segment == b, radii * prof, radii)
        lesions.append({"kind": "stenosis", "branch": int(b), "node": k, "position": tree.nodes[k].tolist(),
                        "diameter_reduction": s_red, "length_mm": 2.355 * sigma,
                        "reference_radius_mm": float(tree.radii[k])})
        placed += 1
    nodes, par, plen, seg = [tree.nodes], [tree.parent], [tree.path_length], [tree.segment]
    rad = [radii]
    bpar, names = list(tree.branch_parent), list(tree.branch_names)
    n_total = tree.n_nodes
    for i in range(aneurysms):
        k = int(rng.choice(interior))
        t = _unit(tree.nodes[k] - tree.nodes[tree.parent[k]])
        side = _rotate(_perp(t), t, float(rng.uniform(0, 2 * np.pi)))
        r_sac = float(np.clip(rng.uniform(1.0, 2.0) * radii[k], *aneurysm_radius))
        neck = tree.nodes[k] + 0.5 * radii[k] * side
        centre = tree.nodes[k] + (radii[k] + 0.6 * r_sac) * side
        b = len(bpar)
        nodes.append(np.stack([neck, centre]))
        rad.append(np.array([min(r_sac, radii[k]), r_sac]))
        par.append(np.array([k, n_total]))
        s0 = tree.path_length[k] + 0.5 * radii[k]
        plen.append(np.array([s0, s0 + float(np.linalg.norm(centre - neck))]))
        seg.append(np.array([b, b]))
        bpar.append(int(tree.segment[k]))
        names.append(f"aneurysm_{i}")
        lesions.append({"kind": "aneurysm", "branch": int(tree.segment[k]), "node": k, "position": centre.tolist(),
                        "sac_radius_mm": r_sac, "sac_branch": b})
        n_total += 2
    out = VesselTree(np.concatenate(nodes), np.concatenate(rad), np.concatenate(par), np.concatenate(plen),
                     np.concatenate(seg), np.asarray(bpar), names, dict(tree.meta, lesions=lesions))
    return out, lesions
