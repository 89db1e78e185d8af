"""On-the-fly fill/mask/DSA training pairs from one CT (+ optional real vessel mask), physics based.

Every :meth:`PairGenerator.sample` draws a fresh C-arm pose (DICOM primary/secondary angles, SID,
SOD, field of view), a fresh vessel tree grown inside the body (or the CT's own real vessels), a
bolus filling state, an effective energy, a dose and a blur, then renders CT and iodine through the
**same** cone-beam geometry (``synthetic_dsa.md`` §6, improvements 2–4):

* ``p_mask = ∫μ_tissue`` of the native CT (contrast removed from real lumens),
* ``p_I = (μ/ρ)_I(E) · ∫c`` with ``c`` in mg/ml (physical contrast, follows kV, size, concentration),
* fill counts ``~ Poisson(I0·e^{−(p_mask + p_I)})`` and mask counts ``~ Poisson(I0·e^{−p_mask})``,
  noise drawn **after** the vessels and fresh for every sample,
* returned in the log domain: ``fill = −ln(N_fill/I0)``, ``mask = −ln(N_mask/I0)``; the target
  ``dsa = p_I`` is noise-free and unblurred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadInput
from ..geometry import ConeBeamGeometry, VolumeGrid
from . import physics
from .contrast import BolusParams, ContrastModel
from .trees import Region, TreeGrower, TreeParams, _unit
from .voxelize import VesselVolume, mask_volume, tree_grid, voxelize_tree


@dataclass
class PairConfig:
    """Random ranges of one training pair (angles in degrees, lengths in mm)."""

    primary_deg: tuple[float, float] = (-60.0, 60.0)
    secondary_deg: tuple[float, float] = (-35.0, 35.0)
    sid: tuple[float, float] = (1000.0, 1200.0)
    sod: tuple[float, float] = (700.0, 800.0)
    fov_at_iso: tuple[float, float] = (120.0, 220.0)   #: detector field of view at the isocentre
    energy_kev: tuple[float, float] = (50.0, 75.0)
    i0: tuple[float, float] = (2e4, 2e5)               #: photons per pixel, log-uniform
    blur_sigma_px: tuple[float, float] = (0.0, 1.0)
    correlation_sigma_px: tuple[float, float] = (0.0, 0.7)
    #: peak iodine in the artery, mg/ml: ~10 (IV-like) to ~150 (selective intra-arterial injection of
    #: 300–370 mg/ml contrast diluted by the blood flow), drawn log-uniformly
    c_peak: tuple[float, float] = (10.0, 150.0)
    root_radius: tuple[float, float] = (1.0, 5.0)
    max_branches: tuple[int, int] = (20, 120)
    real_vessel_probability: float = 0.5               #: when a vessel mask is given
    fill_time: tuple[float, float] = (0.4, 1.0)        #: bolus phase: 1 = fully filled tree
    vessel_spacing: tuple[float, float] = (0.35, 1.0)  #: fine vessel grid spacing bounds


def body_mask(hu: np.ndarray, threshold_hu: float = -300.0) -> np.ndarray:
    """The patient's body: tissue above ``threshold_hu`` with each axial slice's holes (lungs, bowel gas)
    filled, so trees may grow through the lungs (pulmonary vessels) but not into the air outside."""
    from scipy.ndimage import binary_fill_holes

    m = np.asarray(hu) > threshold_hu
    return np.stack([binary_fill_holes(sl) for sl in m])


class PairGenerator:
    """Fresh ``(fill, mask, dsa, vessel_2d, meta)`` samples from one CT volume (HU on ``grid``).

    ``vessel_mask`` (same grid): real contrast-filled vessels of the CT (e.g. TotalSegmentator
    aorta); their lumen is set to blood HU in the mask CT and they become an alternative iodine
    source. Deterministic for a given ``seed`` and call sequence.
    """

    def __init__(self, ct: np.ndarray, grid: VolumeGrid, *, vessel_mask: np.ndarray | None = None,
                 detector: tuple[int, int] = (256, 256), seed: int = 0, config: PairConfig | None = None,
                 body_threshold_hu: float = -300.0) -> None:
        hu = np.asarray(ct, dtype=np.float32)
        if hu.shape != grid.shape:
            raise BadInput(f"CT shape {hu.shape} does not match its grid {grid.shape}")
        self.grid = grid
        self.detector = (int(detector[0]), int(detector[1]))
        self.cfg = config or PairConfig()
        self.rng = np.random.default_rng(seed)
        self.real: VesselVolume | None = None
        if vessel_mask is not None:
            vm = np.asarray(vessel_mask)
            if vm.shape != grid.shape:
                raise BadInput(f"vessel mask shape {vm.shape} does not match the CT grid {grid.shape}")
            if np.any(vm > 0):
                self.real = mask_volume(vm > 0, grid)
                hu = physics.remove_contrast(hu, self.real.occupancy)
        self.native_hu = hu
        body = body_mask(hu, body_threshold_hu)
        if not body.any():
            raise BadInput(f"the CT has no voxel above {body_threshold_hu:g} HU (is it in HU?)")
        self.region = Region(body, grid)
        self._mu_cache: dict[float, np.ndarray] = {}

    # ---------------------------------------------------------------- pieces
    def _mu(self, energy: float) -> np.ndarray:
        key = round(energy, 1)
        if key not in self._mu_cache:
            if len(self._mu_cache) > 4:
                self._mu_cache.pop(next(iter(self._mu_cache)))
            self._mu_cache[key] = physics.hu_to_mu(self.native_hu, key)
        return self._mu_cache[key]

    def _pose(self, iso: np.ndarray) -> ConeBeamGeometry:
        c, r = self.cfg, self.rng
        sid, sod = r.uniform(*c.sid), r.uniform(*c.sod)
        fov = r.uniform(*c.fov_at_iso)
        pix = fov * sid / sod / max(self.detector)
        g = ConeBeamGeometry.from_xa_angles([r.uniform(*c.primary_deg)], [r.uniform(*c.secondary_deg)], sid, sod,
                                            (pix, pix), self.detector)
        return ConeBeamGeometry(g.source + iso, g.det_center + iso, g.det_u, g.det_v, g.det_shape, None,
                                dict(g.meta, isocenter=iso.tolist()))

    def _synthetic_vessels(self, iso: np.ndarray, spacing: float) -> tuple[VesselVolume, dict[str, Any]]:
        c, r = self.cfg, self.rng
        r0 = float(r.uniform(*c.root_radius))
        params = TreeParams(root_radius=r0, max_branches=int(r.integers(c.max_branches[0], c.max_branches[1] + 1)),
                            min_radius=max(0.5, 0.6 * spacing), tortuosity=float(r.uniform(0.1, 0.6)),
                            max_generations=8)
        for _attempt in range(10):   # a root squeezed against the body surface may not grow: retry
            start = iso + r.normal(0, 15, 3)
            if self.region.distance(start) < r0 + 2:
                start = self.region.random_point(r, r0 + 2)
            grower = TreeGrower(params, r, self.region)
            grower.add_root(start, _unit(r.standard_normal(3)), r0)
            tree = grower.grow()
            if tree.n_nodes >= 3:
                break
        else:
            raise BadInput(f"could not grow a vessel tree of root radius {r0:.1f} mm inside this CT's body")
        vg = tree_grid(tree, spacing)
        vol = voxelize_tree(tree, vg, supersampling=3)
        return vol, {"vessels": "synthetic", "root_radius": r0, "n_branches": tree.n_branches,
                     "vessel_spacing": spacing}

    # ---------------------------------------------------------------- public
    def sample(self) -> dict[str, Any]:
        """One pair: ``fill``, ``mask`` (noisy log-domain line integrals), ``dsa`` (ideal p_I),
        ``vessel_2d`` (bool, iodine-equivalent thickness ≥ 0.25 mm at full concentration), ``meta``."""
        from ..operators import forward_project

        c, r = self.cfg, self.rng
        use_real = self.real is not None and r.random() < c.real_vessel_probability
        if use_real:
            kji = np.argwhere(self.real.occupancy > 0.5)
            iso = self.grid.index_to_world(kji[r.integers(len(kji))][::-1][None])[0] + r.normal(0, 20, 3)
        else:
            iso = self.region.random_point(r, 20.0) if np.any(self.region.dist >= 20.0) \
                else self.region.deepest_point()
        geom = self._pose(iso)
        pix_iso = float(geom.pixel_spacing[0, 1] * c.sod[0] / geom.sid[0])
        if use_real:
            vessels, vmeta = self.real, {"vessels": "real-mask"}
        else:
            spacing = float(np.clip(pix_iso, *c.vessel_spacing))
            vessels, vmeta = self._synthetic_vessels(iso, spacing)
        energy = float(r.uniform(*c.energy_kev))
        c_peak = float(np.exp(r.uniform(np.log(c.c_peak[0]), np.log(c.c_peak[1]))))
        bolus = BolusParams(t0=0.0, velocity=150.0, rise=1.0, c_peak=c_peak)
        model = ContrastModel(vessels, bolus, rng=r)
        t_end = float(np.max(model.arrival + model.t_peak)) if model.index.size else 1.0
        t = float(r.uniform(*c.fill_time)) * t_end
        sub, flat, _ = model.cropped_grid()
        conc = np.zeros(int(np.prod(sub.shape)), np.float32)
        conc[flat] = model.values(t)
        p_i = physics.iodine_mu_per_mg_ml(energy) * forward_project(conc.reshape(sub.shape), sub, geom)[0]
        p_mask = forward_project(self._mu(energy), self.grid, geom)[0]
        i0 = float(np.exp(r.uniform(np.log(c.i0[0]), np.log(c.i0[1]))))
        blur = float(r.uniform(*c.blur_sigma_px))
        corr = float(r.uniform(*c.correlation_sigma_px))
        n_fill = physics.acquire(p_mask + p_i, i0, r, blur_sigma_px=blur, correlation_sigma_px=corr)
        n_mask = physics.acquire(p_mask, i0, r, blur_sigma_px=blur, correlation_sigma_px=corr)
        full = physics.iodine_mu_per_mg_ml(energy) * c_peak
        meta = {"geometry": geom.to_dict(), "energy_kev": energy, "i0": i0, "blur_sigma_px": blur,
                "correlation_sigma_px": corr, "c_peak_mg_ml": c_peak, "bolus_time_s": t,
                "pixel_size_at_iso_mm": pix_iso, **vmeta}
        return {"fill": physics.counts_to_line_integral(n_fill, i0),
                "mask": physics.counts_to_line_integral(n_mask, i0),
                "dsa": p_i.astype(np.float32),
                "vessel_2d": p_i >= 0.25 * full,
                "meta": meta}

    def batch(self, n: int) -> dict[str, Any]:
        """``n`` samples stacked: arrays ``[n, H, W]`` and a list of metas."""
        if n < 1:
            raise BadInput(f"batch size must be ≥ 1, got {n}")
        items = [self.sample() for _ in range(n)]
        out: dict[str, Any] = {k: np.stack([it[k] for it in items]) for k in ("fill", "mask", "dsa", "vessel_2d")}
        out["meta"] = [it["meta"] for it in items]
        return out
