"""Real CT backgrounds for the coronary trainers' simulated cases.

A coronary tree simulated inside a smooth chest ellipse is easy to segment; inside a real CT the
detector also sees bone edges, lung texture and 4–6 log units of attenuation. Both trainers
(``train_segmenter``, ``train_refiner``) put a share of their cases through such CTs. The benchmarks'
held-out chest CT, ``pulmonary_cta``, is refused here so no training run can see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BadInput

#: the CT the coronary benchmarks keep for evaluation
HELD_OUT_CT = "pulmonary_cta"

#: a CT background: (HU array ``[z, y, x]``, its grid, name for the model card)
Background = tuple[np.ndarray, Any, str]


def ct_backgrounds(specs: Sequence[str]) -> list[Background]:
    """CT backgrounds named like ``load_ct`` (a sample name or a NIfTI/NRRD/MHA path in HU).

    The held-out CT is refused by its voxels, not only by its name: a copy of it given as a file path
    (the shared data folder has one) is caught as well.
    """
    from ..ddsa.sources import load_ct

    held_out = load_ct(HELD_OUT_CT)[0] if specs else None
    out = []
    for spec in specs:
        hu, grid, _ = load_ct(spec)
        if hu.shape == held_out.shape and np.array_equal(hu, held_out):
            name = spec if spec == HELD_OUT_CT else f"{spec} ({HELD_OUT_CT})"
            raise BadInput(f"{name} is the held-out CT of the coronary benchmarks; train on other CTs")
        out.append((hu, grid, Path(spec).name if Path(spec).is_file() else spec))
    return out


def background_for_case(k: int, backgrounds: Sequence[Background], fraction: float,
                        rng: np.random.Generator) -> Background | None:
    """The CT for the ``k``-th case, or None (the chest ellipse).

    A share ``fraction`` of the cases, evenly interleaved, cycles through ``backgrounds``; each pick is
    mirrored at random left–right and head–foot, so one CT gives four anatomies. ``rng`` is drawn from
    only when a CT is picked, so runs without CTs stay reproducible.
    """
    if not backgrounds or int((k + 1) * fraction) <= int(k * fraction):
        return None
    hu, grid, label = backgrounds[int((k + 1) * fraction) % len(backgrounds)]
    flips = tuple(a for a in (0, 2) if rng.random() < 0.5)
    return (np.flip(hu, flips) if flips else hu), grid, label
