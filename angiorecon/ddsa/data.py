"""Training pairs for deep DSA: a *pair source* protocol, a pool, and a Dataset with correct augmentation.

A **pair source** is any callable ``source(rng) -> (fill, dsa)`` returning two float arrays ``[H, W]``:
the fill frame as line integrals (log domain, noise included) and the ideal noise-free DSA (iodine line
integral, ≥ 0) in the same geometry. The simulator adapter, the tests' drawn tubes and a pre-generated
pool all fit it, so the training loop never depends on where pairs come from.

Augmentation fixes the anchor's defects (``synthetic_dsa.md`` §1.7, "better system" item 8):

* geometric transforms (crop, rotation, scale, flips) are applied **identically** to input and target,
  sampled inside the frame with reflection (no zero-padded borders inside the patch);
* the iodine amount is scaled consistently (``fill += (k−1)·dsa``, ``dsa ×= k``: concentration/kV);
* display curves (log- vs linear-in-transmission LUT, gamma) change the *domain* of the pair, so the
  target is recomputed as ``f(fill) − f(fill − dsa)`` — still sharp, noise-free and consistent;
* noise, blur and low-frequency (scatter-like) fields go on the **input only**; the target stays sharp.

Every item is drawn from ``np.random.default_rng([seed, index])``, so a sample depends only on its
index: runs are reproducible, resumable and split across DDP ranks without overlap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage
import torch
from torch.utils.data import Dataset, Sampler

from .domain import TARGET_GAIN, frame_stats

PairSource = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


class PairPool:
    """A pair source drawing uniformly from pre-generated pairs (simulation is the slow part)."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        if not pairs:
            raise ValueError("PairPool needs at least one pair")
        self.pairs = [(np.asarray(f, np.float32), np.asarray(d, np.float32)) for f, d in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.pairs[int(rng.integers(len(self.pairs)))]


@dataclass(frozen=True)
class Augment:
    """Augmentation probabilities and ranges (all stored in the checkpoint config)."""

    #: iodine amount × k (log-uniform): fill += (k−1)·dsa, dsa ×= k. The simulator's 6–20 mg/ml is an
    #: intravenous/CTA level; selective intra-arterial injections (XCA, DSA runs) reach 10× that.
    iodine: tuple[float, float] = (1.0, 10.0)
    flip: bool = True
    rot90: bool = True
    p_affine: float = 0.7
    scale: tuple[float, float] = (0.6, 1.6)      #: output/source pixel-size ratio (vessel width change)
    p_transmission_lut: float = 0.4              #: show the frame linear in transmission instead of log
    gamma: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.6
    noise: tuple[float, float] = (0.0, 0.03)     #: std as a fraction of the frame scale P99−P1
    p_blur: float = 0.5
    blur: tuple[float, float] = (0.3, 1.2)       #: Gaussian σ in pixels, input only
    p_lowfreq: float = 0.5
    lowfreq: tuple[float, float] = (0.0, 0.15)   #: smooth additive field amplitude / frame scale
    #: circular/rectangular collimator shutters: X-rays blocked outside the field, so fill and mask are
    #: equally dark there and the DSA is zero (real XCA frames often show the black field border)
    p_collimate: float = 0.5
    #: 8-bit display (what PNG angiograms are): exponential LUT windowed on the frame, saturation at
    #: both ends, quantised to 256 levels on the input; read back with the inference mapping
    p_display8: float = 0.6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_AUGMENT = Augment(iodine=(1.0, 1.0), flip=False, rot90=False, p_affine=0.0, p_transmission_lut=0.0, gamma=(1.0, 1.0),
                     p_noise=0.0, p_blur=0.0, p_lowfreq=0.0, p_collimate=0.0, p_display8=0.0)


def display_curve(rng: np.random.Generator, aug: Augment, fill: np.ndarray
                  ) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """A random monotonic increasing display mapping of line integrals (identity, gamma, transmission,
    8-bit display). Returns ``(f, f_input)``: ``f_input`` is ``f`` plus the 8-bit quantisation, which
    degrades the input only (the target stays ``f(fill) − f(fill − dsa)``)."""
    lo, hi = np.percentile(fill, [1.0, 99.0])
    span = max(hi - lo, 1e-6)
    g = float(np.exp(rng.uniform(np.log(aug.gamma[0]), np.log(aug.gamma[1]))))
    transmission = rng.random() < aug.p_transmission_lut
    k = float(rng.uniform(1.0, 4.0)) / span  # dynamic range of the linear display
    display8 = rng.random() < aug.p_display8
    # 8-bit window: P0.5 of the frame near white (v ≈ 200–255), P99.5 near black (v ≈ 0–40)
    v_white, v_black = float(rng.uniform(200.0, 255.0)), float(rng.uniform(0.0, 40.0))

    def base(p: np.ndarray) -> np.ndarray:
        q = (p - lo) / span
        q = np.sign(q) * np.abs(q) ** g
        out = lo + span * q
        if transmission:
            out = -np.exp(-k * (out - lo)) / k
        return out

    if not display8:
        return base, base
    b_lo, b_hi = np.percentile(base(np.asarray(fill, np.float64)), [0.5, 99.5])
    t_white, t_black = np.log(v_white + 0.5), np.log(v_black + 0.5)
    slope = (t_white - t_black) / max(b_hi - b_lo, 1e-6)

    def to_v(p: np.ndarray) -> np.ndarray:
        return np.clip(np.exp(t_white - slope * (base(p) - b_lo)) - 0.5, 0.0, 255.0)

    def f(p: np.ndarray) -> np.ndarray:
        return -np.log((to_v(p) + 0.5) / 256.0)

    def f_input(p: np.ndarray) -> np.ndarray:
        return -np.log((np.round(to_v(p)) + 0.5) / 256.0)

    return f, f_input


def collimate(rng: np.random.Generator, fill: np.ndarray, dsa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shutters on a frame: outside a circle and/or straight edges the beam is blocked (very high line
    integral, no iodine signal), with a soft penumbra a few pixels wide."""
    h, w = fill.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    inside = np.full((h, w), np.inf)
    if rng.random() < 0.7:  # circular field (image intensifier / round crop)
        cy, cx = h / 2 + rng.uniform(-0.25, 0.25) * h, w / 2 + rng.uniform(-0.25, 0.25) * w
        radius = rng.uniform(0.45, 0.8) * max(h, w)
        inside = np.minimum(inside, radius - np.hypot(yy - cy, xx - cx))
    for _ in range(int(rng.integers(0, 3))):  # straight shutter blades
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0.3, 0.5) * max(h, w)
        inside = np.minimum(inside, d - ((yy - h / 2) * np.sin(a) + (xx - w / 2) * np.cos(a)))
    if not np.isfinite(inside).any():
        return fill, dsa
    weight = 1.0 / (1.0 + np.exp(-inside / rng.uniform(0.5, 3.0)))
    lo, hi = np.percentile(fill, [1.0, 99.0])
    p_out = hi + rng.uniform(0.5, 3.0) * max(hi - lo, 1e-3)
    return weight * fill + (1 - weight) * p_out, weight * dsa


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    coarse = rng.standard_normal((4, 4))
    field = ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3, mode="nearest")[: shape[0], : shape[1]]
    return field / max(np.abs(field).max(), 1e-6)


def augment_pair(rng: np.random.Generator, fill: np.ndarray, dsa: np.ndarray, patch: int,
                 aug: Augment) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: (network input, network target) ``[patch, patch]`` in the DOMAIN units."""
    fill = np.asarray(fill, np.float64)
    dsa = np.asarray(dsa, np.float64)
    k = float(np.exp(rng.uniform(np.log(aug.iodine[0]), np.log(aug.iodine[1]))))
    fill, dsa = fill + (k - 1) * dsa, k * dsa  # more/less iodine: same physics, consistent pair
    if rng.random() < aug.p_collimate:
        fill, dsa = collimate(rng, fill, dsa)
    f, f_input = display_curve(rng, aug, fill)
    shown = f_input(fill)
    target_full = f(fill) - f(fill - dsa)
    centre, scale = frame_stats(shown)

    h, w = fill.shape
    if rng.random() < aug.p_affine:
        angle = rng.uniform(0, 2 * np.pi)
        zoom = float(np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1]))))
    else:
        angle, zoom = 0.0, 1.0
    # output pixel o (patch grid) samples source pixel c + A (o - patch/2); A = rotation / zoom
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    mat = np.array([[cos, -sin], [sin, cos]])
    half = patch / 2 * np.abs(mat).sum(axis=1)  # half extent of the sampled region per source axis
    cy = rng.uniform(min(half[0], h / 2), max(h - half[0], h / 2))
    cx = rng.uniform(min(half[1], w / 2), max(w - half[1], w / 2))
    offset = np.array([cy, cx]) - mat @ np.array([patch / 2 - 0.5, patch / 2 - 0.5])
    order = 1 if (angle or zoom != 1.0) else 0
    x = ndimage.affine_transform(shown, mat, offset, output_shape=(patch, patch), order=order, mode="reflect")
    y = ndimage.affine_transform(target_full, mat, offset, output_shape=(patch, patch), order=order, mode="reflect")
    if aug.flip and rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    if aug.flip and rng.random() < 0.5:
        x, y = x[::-1], y[::-1]
    if aug.rot90:
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)

    # input-only degradations (the target keeps its sharp, noise-free definition)
    if rng.random() < aug.p_blur:
        x = ndimage.gaussian_filter(x, rng.uniform(*aug.blur))
    if rng.random() < aug.p_noise:
        sigma = rng.uniform(*aug.noise) * scale
        noise = rng.standard_normal(x.shape)
        if rng.random() < 0.5:  # correlated detector noise
            noise = ndimage.gaussian_filter(noise, rng.uniform(0.5, 1.0))
            noise /= max(noise.std(), 1e-6)
        x = x + sigma * noise
    if rng.random() < aug.p_lowfreq:
        x = x + rng.uniform(*aug.lowfreq) * scale * _smooth_field(rng, x.shape)
    xn = ((x - centre) / scale).astype(np.float32)
    yn = (TARGET_GAIN * y / scale).astype(np.float32)
    return np.ascontiguousarray(xn), np.ascontiguousarray(yn)


class PairDataset(Dataset):
    """Map-style dataset of ``length`` virtual items; item ``i`` is a deterministic function of (seed, i)."""

    def __init__(self, source: PairSource, patch: int = 128, augment: Augment = Augment(), seed: int = 0,
                 length: int = 2 ** 31 - 1) -> None:
        self.source = source
        self.patch = int(patch)
        self.augment = augment
        self.seed = int(seed)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        fill, dsa = self.source(rng)
        x, y = augment_pair(rng, fill, dsa, self.patch, self.augment)
        return torch.from_numpy(x)[None], torch.from_numpy(y)[None]


class StepSampler(Sampler[int]):
    """Indices for global steps ``start, start+1, …``: step s, rank r takes ``[(s·W + r)·B, … + B)``.

    Each rank sees disjoint samples (the role of a DistributedSampler) and resuming at step s continues
    exactly where the run stopped, because an index fixes its sample.
    """

    def __init__(self, batch: int, start_step: int = 0, rank: int = 0, world: int = 1,
                 steps: int | None = None) -> None:
        self.batch, self.start, self.rank, self.world, self.steps = batch, start_step, rank, world, steps

    def __iter__(self):
        s = self.start
        while self.steps is None or s < self.start + self.steps:
            base = (s * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
            s += 1

    def __len__(self) -> int:
        return (self.steps or 0) * self.batch


def full_frame_pairs(source: PairSource, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``n`` un-augmented full frames (x, y, scale) in DOMAIN units — the fixed validation set."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 10_000_019, i])
        fill, dsa = source(rng)
        centre, scale = frame_stats(fill)
        out.append((((fill - centre) / scale).astype(np.float32), (TARGET_GAIN * np.asarray(dsa) / scale).astype(np.float32), scale))
    return out
