"""Evaluation toolkit: overlap/topology (Dice, true clDice, components, Ot), surface distances
(strict and the anchors' ICP protocol), centerline completeness/overlap/radius error, and 2D/3D
PSNR/SSIM. :func:`evaluate_volumes` runs them all; the ``evaluate`` task writes ``metrics.json``."""

from .centerline import centerline_metrics
from .evaluate import evaluate_meshes, evaluate_volumes, resample_to_grid
from .image import projection_metrics, psnr, ssim, volume_metrics
from .surface import anchors_protocol, icp_rigid, sample_surface, surface_distances
from .volume import cldice, dice, n_components, overlap_within

__all__ = ["anchors_protocol", "centerline_metrics", "cldice", "dice", "evaluate_meshes", "evaluate_volumes",
           "icp_rigid", "n_components", "overlap_within", "projection_metrics", "psnr", "resample_to_grid",
           "sample_surface", "ssim", "surface_distances", "volume_metrics"]
