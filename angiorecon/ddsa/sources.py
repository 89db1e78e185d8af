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
