"""Learned 3D refinement of a two-view visual hull (AutoCAR-style occupancy + centerness).

With two views the visual hull contains the lumen plus ghost intersections that no silhouette can
rule out. A small 3D U-Net trained on simulated two-view cases (``train_refiner``) learns which hull
voxels are vessel from local shape: tubes are round, ghosts are polyhedral blobs where the
per-view widths disagree. Its inputs are view-order independent per-voxel features of the masks
(min/max over views of the mask and of the in-mask 2D distance to the vessel edge, in object mm);
it predicts occupancy and a centerness ridge (1 on the centerline) for the graph stage.

Our own design after the idea in ``coronary_two_view.md`` §4.3 / §10.5 (AutoCAR is NC-ND, not reused).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid
from .hull import sample_views
from .problem import CoronaryProblem

#: shipped weights and model card
WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "coronary_refiner.pt"
N_FEATURES = 4
#: 2D edge distances are clipped here (object mm) — the widest coronary radius is ~2.5 mm
EDT_CLIP_MM = 3.0


def view_edt_mm(geometry: ConeBeamGeometry, masks: np.ndarray) -> np.ndarray:
    """Per-view distance from each vessel pixel to the mask edge, in object mm at the isocentre."""
    sid = geometry.sid
    sod = np.linalg.norm(geometry.source, axis=1)
    pix = geometry.pixel_spacing.mean(axis=1)
    out = np.empty(masks.shape, dtype=np.float32)
    for v in range(masks.shape[0]):
        out[v] = ndimage.distance_transform_edt(masks[v] >= 0.5) * pix[v] * sod[v] / sid[v]
    return out


def candidate_mask(hull: np.ndarray, level: float = 0.05, dilate: int = 2) -> np.ndarray:
    """Voxels the refiner may label vessel: the hull grown by ``dilate`` voxels (mask-edge slack)."""
    return ndimage.binary_dilation(hull > level, iterations=dilate)


def hull_features(geometry: ConeBeamGeometry, masks: np.ndarray, grid: VolumeGrid, hull: np.ndarray,
                  candidates: np.ndarray | None = None) -> np.ndarray:
    """Refiner input ``[N_FEATURES, z, y, x]``: min/max over views of mask and of the 2D edge distance.

    Sampled only at ``candidates`` (default: the dilated hull); zero elsewhere.
    """
    cand = candidate_mask(hull) if candidates is None else candidates
    feats = np.zeros((N_FEATURES,) + grid.shape, dtype=np.float32)
    idx = np.argwhere(cand)                                    # (M, 3) as (k, j, i)
    if idx.size == 0:
        return feats
    pts = grid.index_to_world(idx[:, ::-1].astype(np.float64))
    m = sample_views(geometry, masks.astype(np.float32), pts)
    e = np.clip(sample_views(geometry, view_edt_mm(geometry, masks), pts), 0, EDT_CLIP_MM) / EDT_CLIP_MM
    k, j, i = idx.T
    for c, val in enumerate((m.min(0), m.max(0), e.min(0), e.max(0))):
        feats[c, k, j, i] = val
    return feats


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.GroupNorm(min(4, cout), cout), nn.LeakyReLU(0.1),
                         nn.Conv3d(cout, cout, 3, padding=1), nn.GroupNorm(min(4, cout), cout), nn.LeakyReLU(0.1))


class RefinerNet(nn.Module):
    """Small 3D U-Net: features → (occupancy logit, centerness logit); inputs divisible by 2**depth."""

    def __init__(self, in_channels: int = N_FEATURES, base: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "base": base, "depth": depth}
        chans = [base * 2 ** d for d in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])] +
                                  [_block(chans[d - 1], chans[d]) for d in range(1, depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose3d(chans[d], chans[d - 1], 2, stride=2)
                                 for d in range(depth, 0, -1)])
        self.merge = nn.ModuleList([_block(2 * chans[d - 1], chans[d - 1]) for d in range(depth, 0, -1)])
        self.head = nn.Conv3d(chans[0], 2, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for d, blk in enumerate(self.down):
            x = blk(x if d == 0 else nn.functional.max_pool3d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def load_refiner(path: str | Path | None = None, device: str = "cpu") -> tuple[RefinerNet, dict[str, Any]]:
    """The shipped refiner (or ``path``) in eval mode, with the metadata saved next to its weights.

    A missing file is a ``FileNotFoundError`` (the caller may fall back to the raw hull); a file that
    is not a refiner checkpoint (config + matching state_dict) is a one-line ``BadInput``.
    """
    p = Path(path) if path is not None else WEIGHTS
    if not p.is_file():
        raise FileNotFoundError(f"coronary refiner weights not found at {p}; reinstall the package or retrain with "
                                f"`python -m angiorecon.coronary.train_refiner --out {p}`")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=False)
        net = RefinerNet(**blob["config"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        why = " ".join(str(exc).split())                         # torch's messages span lines; the error is one
        raise BadInput(f"{p} is not a coronary refiner checkpoint (config + state_dict): "
                       f"{type(exc).__name__}: {why[:160]}") from None
    return net.to(device).eval(), blob.get("meta", {})


def predict_tiles(net: RefinerNet, feats: np.ndarray, candidates: np.ndarray, *, tile: int = 64,
                  overlap: int = 8, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window inference over the candidates' bounding box → (occupancy, centerness) in [0, 1].

    GroupNorm statistics depend on the tile, so tiles near the 40³ training patches work best
    (simulated left case: Dice 0.389 with 48³, 0.378 with 64³, 0.343 with 96³ tiles).
    """
    shape = candidates.shape
    occ = np.zeros(shape, dtype=np.float32)
    cen = np.zeros(shape, dtype=np.float32)
    if not candidates.any():
        return occ, cen
    mult = 2 ** net.depth
    tile = max(mult, tile // mult * mult)
    idx = np.argwhere(candidates)
    lo, hi = idx.min(0), idx.max(0) + 1
    step = tile - 2 * overlap
    starts = [list(range(lo[a], hi[a], step)) for a in range(3)]
    with torch.no_grad():
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    c0 = np.array([z, y, x]) - overlap
                    core = tuple(slice(max(c + overlap, 0), min(c + tile - overlap, s)) for c, s in zip(c0, shape))
                    if not candidates[core].any():
                        continue
                    sl_src = tuple(slice(max(c, 0), min(c + tile, s)) for c, s in zip(c0, shape))
                    patch = np.zeros((feats.shape[0], tile, tile, tile), dtype=np.float32)
                    dst = tuple(slice(s.start - c, s.stop - c) for s, c in zip(sl_src, c0))
                    patch[(slice(None),) + dst] = feats[(slice(None),) + sl_src]
                    out = torch.sigmoid(net(torch.from_numpy(patch)[None].to(device)))[0].cpu().numpy()
                    # keep the tile's core (the margin lacks context), clipped to the volume
                    src = tuple(slice(s.start - c, s.stop - c) for s, c in zip(core, c0))
                    occ[core] = out[(0,) + src]
                    cen[core] = out[(1,) + src]
    occ *= candidates
    cen *= candidates
    return occ, cen


def refine_hull(problem: CoronaryProblem, hull: np.ndarray, *, device: str = "cpu",
                weights: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy and centerness in [0, 1] on ``problem.grid`` from the soft visual hull (shipped weights)."""
    if hull.shape != problem.grid.shape:
        raise ValueError(f"hull shape {hull.shape} differs from the problem grid {problem.grid.shape}")
    net, _ = load_refiner(weights, device)
    cand = candidate_mask(hull)
    feats = hull_features(problem.geometry, problem.masks, problem.grid, hull, cand)
    return predict_tiles(net, feats, cand, device=device)
