"""2D coronary vessel segmentation of log-domain angiograms (vessels bright): Frangi and a learned U-Net.

* ``frangi``: multi-scale Hessian vesselness (:func:`angiorecon.ddsa.frangi.frangi`, bright ridges)
  with scales given in **mm at the detector** (converted with the imager pixel spacing, so a 0.2 mm and
  a 0.4 mm detector see the same vessels), normalised by a high quantile of the response, then
  hysteresis thresholding (strong seeds grow into connected weak ridges) and removal of small
  components (noise blobs, isolated catheter edges).
* ``learned``: the light U-Net of :mod:`angiorecon.models.unet` trained on synthetic angiograms from
  the simulation engine (:mod:`angiorecon.coronary.train_segmenter`), weights shipped in
  ``angiorecon/weights/coronary_segmenter.pt``. Its input is :func:`normalise_image` of the log image, the
  same function at training and inference, so real PNGs and simulated counts meet the same statistics.
* ``masks``: user-supplied masks (PNG/TIFF/NIfTI/NRRD), checked against the view size.

Every method returns a probability in [0, 1] with ``p >= 0.5`` exactly on the final binary mask, so
downstream code can threshold at 0.5 or use the soft values.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..errors import BadInput

SEGMENTER_WEIGHTS = "coronary_segmenter.pt"
METHODS = ("frangi", "learned", "masks")


@dataclass(frozen=True)
class FrangiParams:
    """Frangi + hysteresis settings (scales in mm at the detector plane).

    Defaults were chosen on ``Angios_40_training`` (mean Dice 0.63 at an assumed 0.5 mm/pixel) while
    keeping Dice ≈ 0.86 on simulated 512² views; never on the testing half.
    """

    sigmas_mm: tuple[float, ...] = (0.4, 0.6, 0.9, 1.3, 1.9)
    beta: float = 0.5
    reference_quantile: float = 0.95   #: response quantile that maps to 1.0 (robust to catheter edges)
    high: float = 0.9                  #: seed threshold on the normalised response
    low: float = 0.4                   #: grow threshold on the normalised response
    min_area_mm2: float = 8.0          #: components smaller than this are dropped


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Flatten and scale one log-domain view for the learned segmenter (float32, same shape).

    Subtracts a broad Gaussian background (σ = 1/16 of the larger side, so it follows the image size
    rather than an unknown pixel spacing) and divides by the robust spread (MAD) of the residual.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise BadInput(f"expected a 2D view, got shape {img.shape}")
    sigma = max(img.shape) / 16.0
    resid = img - ndimage.gaussian_filter(img, sigma, mode="reflect")
    mad = float(np.median(np.abs(resid - np.median(resid)))) * 1.4826
    scale = mad if mad > 1e-8 else float(resid.std()) or 1.0
    return np.clip(resid / scale, -20.0, 40.0).astype(np.float32)


def _soft_probability(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probability whose 0.5 level is exactly ``mask`` and that grows with ``score`` in [0, 1]."""
    s = np.clip(score, 0.0, 1.0).astype(np.float32)
    return np.where(mask, 0.5 + 0.5 * s, 0.499 * s).astype(np.float32)


def remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_pixels``."""
    if min_pixels <= 1 or not mask.any():
        return mask
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def frangi_segment(image: np.ndarray, pixel_spacing_mm: float, params: FrangiParams | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(probability, mask) of one log-domain view (vessels bright) by Frangi + hysteresis."""
    from skimage.filters import apply_hysteresis_threshold

    from ..ddsa.frangi import frangi

    p = params or FrangiParams()
    if pixel_spacing_mm <= 0:
        raise BadInput(f"pixel spacing must be positive, got {pixel_spacing_mm}")
    img = np.asarray(image, dtype=np.float64)
    sigmas = [s / pixel_spacing_mm for s in p.sigmas_mm]
    v = frangi(img, sigmas, beta=p.beta, black_ridges=False)
    ref = float(np.quantile(v, p.reference_quantile))
    if ref <= 0:
        return np.zeros(img.shape, np.float32), np.zeros(img.shape, bool)
    vn = v / ref
    mask = apply_hysteresis_threshold(vn, p.low, p.high)
    mask = remove_small(mask, int(round(p.min_area_mm2 / pixel_spacing_mm ** 2)))
    return _soft_probability(vn, mask), mask


def segmenter_weights_path() -> Path:
    """Location of the shipped learned-segmenter weights inside the package."""
    return Path(str(resources.files("angiorecon").joinpath("weights", SEGMENTER_WEIGHTS)))


class LearnedSegmenter:
    """The shipped (or a given) U-Net checkpoint, ready for whole-view prediction."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        import torch

        from ..models.unet import build_unet

        path = Path(path) if path is not None else segmenter_weights_path()
        if not path.is_file():
            raise BadInput(f"learned coronary segmenter weights not found at {path}; train them with "
                           f"`python -m angiorecon.coronary.train_segmenter --out {path}` or use method 'frangi'")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises pickle/zip/runtime errors on foreign files
            raise BadInput(f"{path} is not a readable coronary segmenter checkpoint ({type(exc).__name__})") from None
        try:
            self.model = build_unet(dict(state["config"]))
            self.model.load_state_dict(state["model"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise BadInput(f"{path} is not a coronary segmenter checkpoint ({type(exc).__name__}: {exc})") from None
        self.threshold = float(state.get("threshold", 0.5))
        self.meta: dict[str, Any] = dict(state.get("meta", {}))
        self.device = device
        self.model.to(device).eval()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Vessel probability of one log-domain view (vessels bright), [H, W] float32."""
        import torch

        x = torch.from_numpy(normalise_image(image))[None, None].to(self.device)
        with torch.inference_mode():
            prob = torch.sigmoid(self.model(x))[0, 0].float().cpu().numpy()
        return prob

    def segment(self, image: np.ndarray, min_pixels: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(probability, mask); the probability is rescaled so its 0.5 level is the checkpoint threshold."""
        prob = self.predict(image)
        mask = remove_small(prob >= self.threshold, min_pixels)
        t = self.threshold
        score = np.where(prob >= t, (prob - t) / max(1 - t, 1e-6), prob / max(t, 1e-6))
        return _soft_probability(score, mask), mask


_CACHE: dict[tuple[str, str], LearnedSegmenter] = {}


def learned_segmenter(device: str = "cpu", path: str | Path | None = None) -> LearnedSegmenter:
    """Cached :class:`LearnedSegmenter` (loading once per process and device)."""
    key = (str(path or segmenter_weights_path()), device)
    if key not in _CACHE:
        _CACHE[key] = LearnedSegmenter(path, device)
    return _CACHE[key]


def read_user_masks(paths: Sequence[str | Path], shape: tuple[int, int, int]) -> np.ndarray:
    """User vessel masks, one file per view (2D image or a [1, H, W] stack), as [V, H, W] in [0, 1]."""
    from .views import read_image_file

    n, h, w = shape
    if len(paths) != n:
        raise BadInput(f"{len(paths)} mask files for {n} views; give one mask per view, in view order")
    out = np.empty(shape, np.float32)
    for v, p in enumerate(paths):
        m = read_image_file(p)
        if m.shape != (h, w):
            raise BadInput(f"mask {p} is {m.shape[0]}x{m.shape[1]} pixels but view {v + 1} is {h}x{w}")
        hi = float(m.max())
        if hi <= 0:
            raise BadInput(f"mask {p} is empty (no pixel above 0)")
        out[v] = np.clip(m / hi if hi > 1 else m, 0, 1)
    return out


def segment_views(views: Any, method: str = "frangi", masks: Sequence[str | Path] | None = None, *,
                  device: str = "cpu", frangi_params: FrangiParams | None = None,
                  weights: str | Path | None = None) -> np.ndarray:
    """Vessel probability [V, H, W] float32 of :class:`~angiorecon.coronary.views.LoadedViews`.

    ``method``: ``frangi``, ``learned`` or ``masks`` (read ``masks``, one file per view). The Frangi
    scales use each view's column pixel spacing from ``views.geometry``.
    """
    if method not in METHODS:
        raise BadInput(f"unknown 2D segmentation method {method!r}; expected one of {', '.join(METHODS)}")
    images = np.asarray(views.images)
    if method == "masks" or masks is not None:
        if masks is None:
            raise BadInput("segmentation method 'masks' needs one mask file per view")
        return read_user_masks(masks, images.shape)
    spacing = np.asarray(views.geometry.pixel_spacing, dtype=np.float64).reshape(images.shape[0], -1)
    out = np.empty(images.shape, np.float32)
    if method == "frangi":
        for v in range(images.shape[0]):
            out[v] = frangi_segment(images[v], float(spacing[v].mean()), frangi_params)[0]
        return out
    seg = learned_segmenter(device, weights)
    for v in range(images.shape[0]):
        out[v] = seg.segment(images[v], int(round(FrangiParams().min_area_mm2 / float(spacing[v].mean()) ** 2)))[0]
    return out
