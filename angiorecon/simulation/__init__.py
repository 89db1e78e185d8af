"""SyntheticDSA engine: vessel trees, contrast dynamics and X-ray physics inside real CT, with ground truth.

* :mod:`.trees` — smooth Murray/Zamir vessel trees grown in a CT region or on a heart ellipsoid;
* :mod:`.voxelize` — anti-aliased voxelisation of trees; real masks with geodesic path length;
* :mod:`.contrast` — bolus arrival and gamma-variate filling (4D iodine, time-to-peak);
* :mod:`.physics` — HU → μ, iodine μ/ρ (NIST), Beer–Lambert, Poisson noise, blur, motion, display;
* :mod:`.pairs` — on-the-fly fill/mask/DSA training pairs (:class:`PairGenerator`);
* :mod:`.products` — rotational DSA runs and two-view coronary angiograms with ground truth.
"""

from .contrast import BolusParams, ContrastModel
from .pairs import PairConfig, PairGenerator
from .products import (CoronaryConfig, RotationalConfig, simulate_coronary, simulate_rotational, write_coronary,
                       write_rotational)
from .trees import HeartModel, TreeParams, VesselTree, grow_coronary_tree, grow_tree
from .voxelize import VesselVolume, mask_volume, voxelize_tree

__all__ = ["BolusParams", "ContrastModel", "PairConfig", "PairGenerator", "CoronaryConfig", "RotationalConfig",
           "simulate_coronary", "simulate_rotational", "write_coronary", "write_rotational", "HeartModel", "TreeParams",
           "VesselTree", "grow_coronary_tree", "grow_tree", "VesselVolume", "mask_volume", "voxelize_tree"]
