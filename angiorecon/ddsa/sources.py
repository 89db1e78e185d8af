"""Pair sources backed by the simulation engine (:class:`angiorecon.simulation.pairs.PairGenerator`).

A CT is named either by a path (NIfTI/NRRD/MHA in HU, optionally ``PATH::VESSEL_MASK`` for its real
contrast-filled vessels) or by a sample name of :mod:`angiorecon.data` (e.g. ``aorta_cta``, used with
synthetic trees only). The
simulator renders CT + synthetic (or real) vessels through one cone-beam pose with fresh noise;
``fill`` (noisy line integrals) is the network input and ``dsa`` (ideal iodine line integral) the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BadInput
from .data import PairPool


def load_ct(spec: str) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """(HU array, VolumeGrid, vessel mask or None) for a path (``CT[::MASK]``) or a sample CT name.

    A mask makes the simulator use the CT's real vessels for part of the samples; without one every
    sample gets a freshly grown synthetic tree.
    """
    from ..formats.volume import read_volume

    ct_path, _, mask_path = spec.partition("::")
    if Path(ct_path).is_file():
        ct, grid = read_volume(ct_path)
        mask = None
        if mask_path:
            mask, _ = read_volume(mask_path)
            if mask.shape != ct.shape:
                raise BadInput(f"vessel mask {mask_path} shape {mask.shape} differs from CT {ct.shape}")
        return ct.astype(np.float32), grid, mask
    from ..data import load_sample_ct

    hu, grid, _masks = load_sample_ct(spec)  # unknown names raise BadInput listing the samples
    # sample CTs: synthetic trees only (the CTA's own enhanced vessels stay in the background)
    return hu, grid, None


def simulated_pairs(spec: str, n: int, *, seed: int, detector: tuple[int, int] = (256, 256),
                    progress: Callable[[float, str], None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (fill, dsa) pairs simulated from the CT ``spec`` (deterministic for ``seed``)."""
    from ..simulation.pairs import PairGenerator

    if n < 1:
        raise BadInput(f"need at least one simulated frame, got {n}")
    ct, grid, mask = load_ct(spec)
    gen = PairGenerator(ct, grid, vessel_mask=mask, detector=detector, seed=seed)
    pairs = []
    for i in range(n):
        s = _sample_with_retry(gen)
        pairs.append((np.asarray(s["fill"], np.float32), np.asarray(s["dsa"], np.float32)))
        if progress:
            progress((i + 1) / n, f"{Path(spec.partition('::')[0]).name}: frame {i + 1}/{n}")
    return pairs


def _sample_with_retry(gen: Any, tries: int = 5) -> dict[str, Any]:
    """One simulator sample; a draw the simulator cannot render (e.g. a degenerate random tree) is
    skipped and redrawn — the generator's state has moved on, so the next draw differs."""
    for _ in range(tries - 1):
        try:
            return gen.sample()
        except (ValueError, IndexError):
            continue
    return gen.sample()


def simulated_pool(spec: str, n: int, *, seed: int, detector: tuple[int, int] = (256, 256),
                   progress: Callable[[float, str], None] | None = None) -> PairPool:
    """A :class:`PairPool` of ``n`` simulated frames (crops/augmentations are drawn per sample)."""
    return PairPool(simulated_pairs(spec, n, seed=seed, detector=detector, progress=progress))


def coronary_pairs(spec: str | None, n: int, *, seed: int, detector: tuple[int, int] = (256, 256),
                   views_per_tree: int = 4,
                   progress: Callable[[float, str], None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (fill, dsa) pairs of selective coronary injections (:func:`simulate_coronary`).

    Why: real XCA frames show thin, tortuous, densely opacified arteries (intra-arterial iodine
    ~100–250 mg/ml) a few pixels wide; the CTA-level trees of :class:`PairGenerator` are too faint and
    too thick for them. Each call grows one coronary forest and sees it from ``views_per_tree`` random
    C-arm views over the CT ``spec`` (or the simulator's chest ellipse when ``spec`` is None), with the
    acquisition (dose, kV, blur, scatter, pixel size, iodine) drawn per call. ``fill`` is the noisy
    line integral of background + iodine, ``dsa`` the noise-free iodine line integral, so the pair is
    physically consistent.
    """
    from ..simulation import physics
    from ..simulation.products import CoronaryConfig, simulate_coronary

    if n < 1:
        raise BadInput(f"need at least one simulated frame, got {n}")
    hu = grid = None
    if spec:
        hu, grid, _ = load_ct(spec)
    rng = np.random.default_rng([seed, 0xC0])
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    while len(pairs) < n:
        i0 = float(np.exp(rng.uniform(np.log(5e4), np.log(1e6))))  # clinical XCA frame doses
        cfg = CoronaryConfig(views=views_per_tree, min_separation_deg=0.0, max_separation_deg=180.0,
                             jitter_deg=15.0, pixel_spacing=(0.45, 0.9), detector=detector,
                             energy_kev=float(rng.uniform(55.0, 80.0)), i0=i0,
                             blur_sigma_px=float(rng.uniform(0.3, 1.2)),
                             c_peak=float(np.exp(rng.uniform(np.log(60.0), np.log(250.0)))),
                             vessel_spacing=0.3, side=str(rng.choice(["left", "right", "both"])),
                             scatter_fraction=float(rng.uniform(0.0, 0.3)))
        try:
            views = simulate_coronary(hu, grid, config=cfg, seed=int(rng.integers(2 ** 31)))
        except (ValueError, IndexError, BadInput):
            continue  # a degenerate random forest: draw another
        fill = physics.counts_to_line_integral(views.counts, i0)
        for f, d in zip(fill, views.iodine):
            if len(pairs) < n:
                pairs.append((np.asarray(f, np.float32), np.asarray(d, np.float32)))
        if progress:
            progress(len(pairs) / n, f"coronary views {len(pairs)}/{n}")
    return pairs


def training_pool(spec: str, n: int, *, seed: int, vessels: str = "coronary", detector: tuple[int, int] = (256, 256),
                  progress: Callable[[float, str], None] | None = None) -> PairPool:
    """The pool for ``ddsa-train``: ``coronary`` (selective injections), ``trees`` (PairGenerator's
    body-wide synthetic/real vessels) or ``mixed`` (half each)."""
    if vessels == "coronary":
        return PairPool(coronary_pairs(spec, n, seed=seed, detector=detector, progress=progress))
    if vessels == "trees":
        return simulated_pool(spec, n, seed=seed, detector=detector, progress=progress)
    if vessels == "mixed":
        k = max(1, n // 2)
        first = coronary_pairs(spec, k, seed=seed, detector=detector,
                               progress=(lambda f, m: progress(0.5 * f, m)) if progress else None)
        rest = simulated_pairs(spec, max(1, n - k), seed=seed, detector=detector,
                               progress=(lambda f, m: progress(0.5 + 0.5 * f, m)) if progress else None)
        return PairPool(first + rest)
    raise BadInput(f"--vessels must be coronary, trees or mixed, got {vessels!r}")
