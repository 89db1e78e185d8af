"""Job dictionaries of the ``simulate`` and ``ddsa`` engine tasks (keys as their ``job_from_args``)."""

from __future__ import annotations

import os
from typing import Any, Iterable

from DSAReconstructionLib.jobs import absolute

PRODUCTS = ("rotational", "pairs", "two-view")
TREE_SOURCES = ("segmentation", "generate")
#: shipped sample CTs the engine can simulate in (``simulate --sample``).
SAMPLE_CTS = ("aorta_cta",)

#: ``simulate`` job with every option at its command-line default (``simulate.job_from_args``).
SIMULATE_DEFAULTS: dict[str, Any] = {
    "product": "rotational", "sample": None, "ct": None, "vessels": [], "vessel_source": None, "frames": 133,
    "arc_deg": 200.0, "duration_s": 4.4, "detector": None, "det_spacing": None, "sad": 750.0, "sid": 1200.0,
    "energy_kev": 65.0, "i0": None, "blur_sigma_px": None, "motion_deg": 0.0, "motion_mm": 0.0, "c_peak": None,
    "velocity": 120.0, "late_fraction": 0.0, "branch_variability": 0.0, "dicom_display": "raw", "scatter": 0.0,
    "stenoses": 0, "aneurysms": 0, "views": 2, "side": "both", "count": 16, "dicom": True, "seed": 0,
}


def simulate_job(product: str, ct: str | os.PathLike[str] | None = None, *, sample: str | None = None,
                 vessel_masks: Iterable[str | os.PathLike[str]] = (), frames: int = 133,
                 arc_degrees: float = 200.0, views: int = 2, count: int = 16, detector: int | None = None,
                 seed: int = 0, **options: Any) -> dict[str, Any]:
    """``simulate PRODUCT (--ct CT [--vessels MASK ...] --vessel-source S | --sample NAME) --frames N
    --arc DEG --views V --count C [--detector D] --seed S``.

    With vessel masks the contrast fills those vessels (``vessel_source`` real), without them the
    engine grows a synthetic vessel tree inside the CT. ``options``: any other key of
    :data:`SIMULATE_DEFAULTS` (e.g. ``stenoses=2``); the rest keep the task's defaults.
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")
    if ct is not None and sample is not None:
        raise ValueError("give either a CT file or a shipped sample, not both")
    if sample is not None and sample not in SAMPLE_CTS:
        raise ValueError(f"unknown sample {sample!r}; expected one of {', '.join(SAMPLE_CTS)}")
    if min(frames, views, count) < 1:
        raise ValueError(f"frames, views and count must be >= 1, got {frames}, {views}, {count}")
    unknown = set(options) - set(SIMULATE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown simulate options: {', '.join(sorted(unknown))}")
    vessels = [absolute(v) for v in vessel_masks]
    if vessels and ct is None:
        raise ValueError("vessel masks need the CT they belong to")
    job = dict(SIMULATE_DEFAULTS, vessels=[])
    job.update(options)
    job.update({"product": product, "sample": sample, "ct": None if ct is None else absolute(ct), "vessels": vessels,
                "frames": int(frames), "arc_deg": float(arc_degrees), "views": int(views), "count": int(count),
                "detector": None if detector is None else int(detector), "seed": int(seed)})
    if ct is not None:
        job["vessel_source"] = "real" if vessels else "synthetic"
    return job


def ddsa_job(inputs: Iterable[str | os.PathLike[str]], *, model: str | os.PathLike[str] | None = None,
             tile: int = 512, overlap: int = 32, batch: int = 8) -> dict[str, Any]:
    """``ddsa INPUT... [--model M] --tile T --overlap O --batch B`` (deep DSA without a mask run)."""
    paths = [absolute(p) for p in inputs]
    if not paths:
        raise ValueError("deep DSA needs at least one input image or stack")
    return {"inputs": paths, "model": absolute(model) if model else None,
            "tile": int(tile), "overlap": int(overlap), "batch": int(batch)}
