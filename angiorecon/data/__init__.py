"""Sample data shipped inside the package (see ``PROVENANCE.md`` here), located via importlib.resources.

So that simulations from real anatomy, demos and tests run on a machine without ``../shared``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..geometry import VolumeGrid

#: sample name → (CT file, label-map file, {label value: vessel name})
SAMPLES: dict[str, tuple[str, str, dict[int, str]]] = {
    "aorta_cta": ("aorta_cta/ct.nii.gz", "aorta_cta/vessel_labels.nii.gz", {
        1: "aorta", 2: "brachiocephalic_trunk", 3: "common_carotid_artery_left",
        4: "subclavian_artery_left", 5: "celiac_trunk", 6: "superior_mesenteric_artery"}),
    "pulmonary_cta": ("pulmonary_cta/ct.nii.gz", "pulmonary_cta/vessel_labels.nii.gz", {1: "pulmonary_artery"}),
}


def sample_path(relative: str) -> Path:
    """Filesystem path of a shipped data file (``relative`` to this package)."""
    p = Path(str(resources.files(__name__).joinpath(relative)))
    if not p.exists():
        raise BadInput(f"sample data file {relative!r} is missing from the installed package ({p})")
    return p


def load_sample_ct(name: str = "aorta_cta") -> tuple[np.ndarray, VolumeGrid, dict[str, np.ndarray]]:
    """(HU volume float32 ``[z, y, x]``, grid, {vessel name: bool mask}) of a shipped CT sample."""
    from ..formats.volume import read_volume

    if name not in SAMPLES:
        raise BadInput(f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
    ct_rel, lab_rel, names = SAMPLES[name]
    hu, grid = read_volume(sample_path(ct_rel))
    labels, _ = read_volume(sample_path(lab_rel))
    masks = {n: labels == v for v, n in names.items()}
    return hu.astype(np.float32), grid, masks
