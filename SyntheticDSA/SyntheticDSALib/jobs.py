"""Job dictionaries of the ``simulate`` and ``ddsa`` engine tasks (keys as their ``job_from_args``)."""

from __future__ import annotations

import os
from typing import Any, Iterable

from DSAReconstructionLib.jobs import absolute

PRODUCTS = ("rotational", "pairs", "two-view")
TREE_SOURCES = ("segmentation", "generate")


def simulate_job(product: str, ct: str | os.PathLike[str], *, vessel_masks: Iterable[str | os.PathLike[str]] = (),
                 frames: int = 133, arc_degrees: float = 200.0, seed: int = 0) -> dict[str, Any]:
    """``simulate PRODUCT --ct CT [--vessels MASK ...] --frames N --arc DEG --seed S``.

    With vessel masks the contrast fills those vessels (``vessel_source`` real), without them the
    engine grows a synthetic vessel tree inside the CT. Other settings keep the task's defaults.
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    vessels = [absolute(v) for v in vessel_masks]
    return {"product": product, "ct": absolute(ct), "vessels": vessels,
            "vessel_source": "real" if vessels else "synthetic", "frames": int(frames),
            "arc_deg": float(arc_degrees), "seed": int(seed)}


def ddsa_job(inputs: Iterable[str | os.PathLike[str]], *, model: str | os.PathLike[str] | None = None,
             tile: int = 256, overlap: int = 32, batch: int = 8) -> dict[str, Any]:
    """``ddsa INPUT... [--model M] --tile T --overlap O --batch B`` (deep DSA without a mask run)."""
    paths = [absolute(p) for p in inputs]
    if not paths:
        raise ValueError("deep DSA needs at least one input image or stack")
    return {"inputs": paths, "model": absolute(model) if model else None,
            "tile": int(tile), "overlap": int(overlap), "batch": int(batch)}
