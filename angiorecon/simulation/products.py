"""Simulated acquisitions with ground truth: rotational DSA runs and two-view coronary angiograms.

Both render CT background and iodine through one cone-beam geometry with the physics of
:mod:`.physics`. World frames:

* rotational runs use the VPAL/4DRGS convention (``dsa_reconstruction.md`` §2.3): the CT grid is
  shifted so that its centre is the isocentre (world origin) and the C-arm rotates about world z
  (the patient's long axis, LPS); the truth volumes are written on exactly that centred grid;
* coronary views use the DICOM patient frame (LPS, isocentre at the origin) and
  :meth:`ConeBeamGeometry.from_xa_angles`, so they can be written as DICOM XA.

Functions return in-memory results (arrays + geometry + truth); :func:`write_rotational` and
:func:`write_coronary` write them in the formats the reconstruction tasks read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BadInput, check_memory
from ..geometry import ConeBeamGeometry, VolumeGrid
from . import physics
from .contrast import BolusParams, ContrastModel, node_times
from .trees import HeartModel, Region, TreeGrower, TreeParams, VesselTree, _unit, add_lesions, grow_coronary_tree
from .voxelize import VesselVolume, mask_volume, tree_grid, tree_mesh, voxelize_tree

Progress = Callable[[float, str], None]


def _noop(_f: float, _m: str = "") -> None:
    return None


def centered_grid(grid: VolumeGrid) -> tuple[VolumeGrid, np.ndarray]:
    """The same voxels with the grid centre moved to the world origin (isocentre); returns (grid, shift)."""
    shift = -grid.center
    aff = grid.affine.copy()
    aff[:3, 3] += shift
    return VolumeGrid(grid.shape, aff), shift


# ======================================================================== rotational DSA
@dataclass
class RotationalConfig:
    """A C-arm rotational DSA acquisition (mask run + fill run) and its physics."""

    frames: int = 133
    arc_deg: float = 200.0
    duration_s: float = 4.4                 #: rotation time; frame i is at t = i·duration/frames
    detector: tuple[int, int] = (256, 256)
    det_spacing: float | None = None        #: mm; None: the detector just covers the vessels
    sad: float = 750.0                      #: source–isocentre (DSO), mm
    sid: float = 1200.0                     #: source–detector (DSD), mm
    energy_kev: float = 65.0
    i0: float = 1e5                         #: photons per pixel (unattenuated)
    blur_sigma_px: float = 0.5
    correlation_sigma_px: float = 0.0
    motion_deg: float = 0.0                 #: max rigid rotation between mask and fill runs
    motion_mm: float = 0.0                  #: max rigid translation between mask and fill runs
    bolus: BolusParams = field(default_factory=lambda: BolusParams(t0=0.4, velocity=120.0, rise=1.2,
                                                                   c_peak=40.0, dispersion=0.003))
    truth_times: int = 5                    #: concentration volumes written at this many times
    dicom_display: str = "raw"              #: DICOM pixels: "raw" counts (LIN) or vendor-like "log" display
    scatter_fraction: float = 0.0           #: scatter-to-primary ratio of a smooth scatter background
    stenoses: int = 0                       #: stenoses on the synthetic tree (if any)
    aneurysms: int = 0                      #: saccular aneurysms on the synthetic tree (if any)

    def validate(self) -> None:
        if self.frames < 2 or not 0 < self.arc_deg <= 360:
            raise BadInput(f"need ≥ 2 frames and 0 < arc ≤ 360°, got {self.frames} frames over {self.arc_deg}°")
        if not 0 < self.sad < self.sid:
            raise BadInput(f"need 0 < sad < sid, got sad={self.sad}, sid={self.sid}")
        if self.i0 <= 0:
            raise BadInput(f"i0 must be positive, got {self.i0}")
        self.bolus.validate()


@dataclass
class RotationalRun:
    """A simulated rotational DSA run with its ground truth (all on the centred world frame)."""

    geometry: ConeBeamGeometry               #: mask-run geometry (the fill run differs only by motion)
    fill_geometry: ConeBeamGeometry
    mask_run: np.ndarray                     #: [N, H, W] detected counts
    fill_run: np.ndarray                     #: [N, H, W] detected counts
    dsa: np.ndarray                          #: [N, H, W] ln(mask) − ln(fill), clipped ≥ 0
    iodine: np.ndarray                       #: [N, H, W] noise-free iodine line integrals
    grid: VolumeGrid                         #: centred CT grid (= reconstruction grid)
    vessels: VesselVolume                    #: occupancy / path length on ``vessel grid``
    contrast: ContrastModel
    tree: VesselTree | None
    config: RotationalConfig
    info: dict[str, Any] = field(default_factory=dict)


def _vessels_on_grid(hu: np.ndarray, grid: VolumeGrid, masks: dict[str, np.ndarray] | None, source: str,
                     rng: np.random.Generator, tree_params: TreeParams | None, lesions: tuple[int, int] = (0, 0)
                     ) -> tuple[VesselVolume, VesselTree | None, np.ndarray, dict[str, Any]]:
    """Iodine-fillable vessels on the CT grid, the tree (if synthetic) and the native (mask-run) HU."""
    info: dict[str, Any] = {"vessel_source": source}
    native = hu
    real: VesselVolume | None = None
    tree: VesselTree | None = None
    if source in ("real", "both"):
        if not masks:
            raise BadInput("vessel source 'real' needs vessel masks (--vessels FILE or --sample)")
        union = np.zeros(grid.shape, bool)
        for m in masks.values():
            union |= np.asarray(m) > 0
        if not union.any():
            raise BadInput("the vessel masks are empty")
        inflow_mask = np.asarray(masks.get("aorta", union)) > 0
        kji = np.argwhere(inflow_mask)
        world = grid.index_to_world(kji[:, ::-1])
        top = world[:, 2] >= world[:, 2].max() - 3.0
        inflow = world[top].mean(axis=0)                 # most cranial aorta (catheter in the arch)
        real = mask_volume(union, grid, inflow)
        native = physics.remove_contrast(hu, real.occupancy)
        info.update({"inflow_world": inflow.tolist(), "vessel_names": sorted(masks)})
    if source in ("synthetic", "both"):
        from .pairs import body_mask

        region = Region(body_mask(native), grid)
        params = tree_params or TreeParams(root_radius=3.0, max_branches=150, min_radius=max(0.5, 0.4 *
                                                                                              grid.spacing.min()))
        best_tree: VesselTree | None = None
        for _attempt in range(8):   # a root next to the body surface can leave no room: try another
            grower = TreeGrower(params, rng, region)
            if real is not None:
                # root the synthetic tree on the real vessel surface: it branches off the real anatomy
                kji = np.argwhere((real.occupancy > 0.5) & (region.dist >= params.root_radius + 2))
                if kji.size == 0:
                    raise BadInput("no room in the body next to the real vessels to grow a synthetic tree")
                pick = kji[rng.integers(len(kji))]
                start = grid.index_to_world(pick[::-1][None])[0]
                s0 = float(real.path_length[tuple(pick)])
            else:
                start = region.random_point(rng, params.root_radius * 3 + 5)
                s0 = 0.0
            grower.add_root(start, _unit(rng.standard_normal(3) + 0.5 * region.inward(start)),
                            params.root_radius)
            tree = grower.grow()
            if best_tree is None or tree.n_branches > best_tree.n_branches:
                best_tree, best_s0 = tree, s0
            if tree.n_branches >= min(10, params.max_branches):
                break
        tree, s0 = best_tree, best_s0
        if any(lesions):
            tree, info["lesions"] = add_lesions(tree, rng, stenoses=lesions[0], aneurysms=lesions[1],
                                                min_vessel_radius=1.5 * float(grid.spacing.min()))
        tree.path_length += s0
        synth = voxelize_tree(tree, grid, supersampling=3)
        info["tree"] = {"n_branches": tree.n_branches, "n_nodes": tree.n_nodes,
                        "total_length_mm": tree.total_length()}
        if real is None:
            real = synth
        else:
            take = synth.occupancy > real.occupancy
            real = VesselVolume(np.maximum(real.occupancy, synth.occupancy),
                                np.where(take, synth.path_length, real.path_length),
                                np.where(take, synth.branch + 1, real.branch), grid)
    if real is None:
        raise BadInput(f"unknown vessel source {source!r}; use real, synthetic or both")
    if any(lesions) and tree is None:
        raise BadInput("stenoses/aneurysms are placed on a synthetic tree: use vessel source synthetic or both")
    return real, tree, native, info


def simulate_rotational(hu: np.ndarray, grid: VolumeGrid, masks: dict[str, np.ndarray] | None = None, *,
                        vessel_source: str = "real", config: RotationalConfig | None = None,
                        tree_params: TreeParams | None = None, seed: int = 0,
                        progress: Progress = _noop) -> RotationalRun:
    """Simulate a mask run and a fill run (with bolus filling during the rotation) from a CT in HU."""
    from ..operators import forward_project

    cfg = config or RotationalConfig()
    cfg.validate()
    hu = np.asarray(hu, dtype=np.float32)
    if hu.shape != grid.shape:
        raise BadInput(f"CT shape {hu.shape} does not match its grid {grid.shape}")
    rng = np.random.default_rng(seed)
    cgrid, shift = centered_grid(grid)
    progress(0.02, "vessels")
    if masks is not None:
        for name, m in masks.items():
            if np.shape(m) != grid.shape:
                raise BadInput(f"vessel mask {name!r} shape {np.shape(m)} does not match the CT {grid.shape}")
    vessels, tree, native, info = _vessels_on_grid(hu, cgrid, masks, vessel_source, rng, tree_params,
                                                   (cfg.stenoses, cfg.aneurysms))
    contrast = ContrastModel(vessels, cfg.bolus, rng=rng)
    n = cfg.frames
    h, w = cfg.detector
    check_memory(6.0 * n * h * w * 8, f"a {n}-frame {h}×{w} rotational run")
    angles = np.deg2rad(90.0 - cfg.arc_deg / 2 + cfg.arc_deg * np.arange(n) / (n - 1))
    times = cfg.duration_s * np.arange(n) / n
    spacing = cfg.det_spacing
    if spacing is None:
        lo, hi = contrast.bbox()
        corners = cgrid.index_to_world(np.array([[a, b, c] for a in (lo[2], hi[2]) for b in (lo[1], hi[1])
                                                 for c in (lo[0], hi[0])], dtype=np.float64))
        r_xy = np.linalg.norm(corners[:, :2], axis=1).max()
        z_ext = 2 * np.abs(corners[:, 2]).max()
        spacing = 1.05 * max(2 * r_xy * cfg.sid / (cfg.sad + r_xy) / w, z_ext * cfg.sid / (cfg.sad - r_xy) / h)
    geom = ConeBeamGeometry.circular(angles, cfg.sad, cfg.sid, (h, w), float(spacing), times=times,
                                     meta={"arc_deg": cfg.arc_deg, "time_unit": "s",
                                           "normalised_times": (np.arange(n) / n).tolist()})
    motion = np.eye(4)
    if cfg.motion_deg > 0 or cfg.motion_mm > 0:
        motion = physics.random_motion(rng, cfg.motion_deg, cfg.motion_mm)
    fill_geom = physics.move_patient(geom, motion) if not np.allclose(motion, np.eye(4)) else geom
    mu = physics.hu_to_mu(native, cfg.energy_kev)
    progress(0.05, "mask projections")
    p_mask = forward_project(mu, cgrid, geom)
    p_mask_fill = p_mask if fill_geom is geom else forward_project(mu, cgrid, fill_geom)
    progress(0.3, "iodine projections")
    sub, flat, _ = contrast.cropped_grid()
    k_i = physics.iodine_mu_per_mg_ml(cfg.energy_kev)
    iodine = np.empty((n, h, w), np.float32)
    conc = np.zeros(int(np.prod(sub.shape)), np.float32)
    for i in range(n):
        conc[flat] = contrast.values(float(times[i]))
        forward_project(conc.reshape(sub.shape), sub, fill_geom.subset([i]), out=iodine[i:i + 1])
        if i % 8 == 0:
            progress(0.3 + 0.55 * i / n, "iodine projections")
    iodine *= k_i
    progress(0.86, "detector")
    # raw runs are clamped to ≥ 1 count (a detector never reports ≤ 0), so log(mask) − log(fill) is defined
    det = {"blur_sigma_px": cfg.blur_sigma_px, "correlation_sigma_px": cfg.correlation_sigma_px,
           "scatter_fraction": cfg.scatter_fraction, "scatter_sigma_px": max(h, w) / 8}
    mask_run = np.maximum(physics.acquire(p_mask, cfg.i0, rng, **det), 1.0).astype(np.float32)
    fill_run = np.maximum(physics.acquire(p_mask_fill + iodine, cfg.i0, rng, **det), 1.0).astype(np.float32)
    dsa = physics.dsa(mask_run, fill_run)
    info.update({"world_shift_from_ct": shift.tolist(), "det_spacing": float(spacing),
                 "patient_motion": motion.tolist(), "iodine_mu_per_mg_ml": k_i,
                 "late_branches": contrast.late_branches.tolist()})
    return RotationalRun(geom, fill_geom, mask_run, fill_run, dsa, iodine, cgrid, vessels, contrast, tree, cfg, info)


def _preview(stack: np.ndarray, indices: np.ndarray, titles: list[str], path: Path, title: str,
             auto_contrast: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(indices)
    fig, axes = plt.subplots(1, k, figsize=(2.2 * k, 2.6), squeeze=False)
    vmax = float(np.percentile(stack[indices], 99.8)) or 1.0
    for ax, i, t in zip(axes[0], indices, titles):
        lo, hi = (np.percentile(stack[i], (1, 99.5)) if auto_contrast else (0.0, vmax))
        ax.imshow(stack[i], cmap="gray_r", vmin=lo, vmax=hi)
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".tmp_{path.name}")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(path)


def write_rotational(run: RotationalRun, out: Callable[[str], Path], *, dicom: bool = True,
                     progress: Progress = _noop) -> list[tuple[str, str, str]]:
    """Write a run: VPAL/4DRGS dataset files, DICOM XA, truth and a preview.

    ``out(relative) -> Path`` gives the destination of each file (``TaskContext.path`` in a task).
    Returns ``(role, relative path, description)`` for every file written.
    """
    from ..formats.dataset import DSADataset, write_dataset
    from ..formats.volume import write_stack, write_volume

    outs: list[tuple[str, str, str]] = []
    sp = tuple(float(x) for x in run.geometry.pixel_spacing[0])
    n = run.geometry.n_views

    def add(role: str, rel: str, desc: str) -> None:
        outs.append((role, rel, desc))

    folder = out("dataset/transforms.json").parent
    sim_meta = {"time_unit": "s", "energy_kev": run.config.energy_kev, "i0": run.config.i0}
    write_dataset(folder, DSADataset(run.geometry, run.grid, projections=run.dsa, mask_run=run.mask_run,
                                     fill_run=run.fill_run, extra={"angiorecon_simulation": sim_meta}))
    add("projections", "dataset/mask_run.nii.gz", "mask run, detected counts (>= 1) [frames, rows, cols]")
    add("projections", "dataset/fill_run.nii.gz", "fill run, detected counts (>= 1) [frames, rows, cols]")
    add("projections", "dataset/proj.nii.gz", "DSA line integrals log(mask) - log(fill), clipped >= 0")
    add("dataset", "dataset/transforms.json", "VPAL/4DRGS geometry (radians, mm, volume centred on the isocentre; "
                                              "exact frame times in s as angiorecon_time)")
    run.geometry.save_json(out("dataset/geometry.json"))
    add("dataset", "dataset/geometry.json", "engine ConeBeamGeometry of the mask run (per-view vectors, times)")
    progress(0.3, "truth")
    g = run.grid
    write_volume(out("truth/vessel_occupancy.nii.gz"), run.vessels.occupancy, g)
    add("volume", "truth/vessel_occupancy.nii.gz", "fractional vessel occupancy (partial volume) 0..1")
    write_volume(out("truth/vessel_mask.nii.gz"), run.vessels.mask().astype(np.uint8), g)
    add("vessel_mask", "truth/vessel_mask.nii.gz", "vessel mask (occupancy >= 0.5)")
    write_volume(out("truth/iodine_peak.nii.gz"), run.contrast.peak_concentration_map(), g)
    add("volume", "truth/iodine_peak.nii.gz", "peak iodine concentration c_max(x), mg/ml")
    write_volume(out("truth/arrival_time.nii.gz"), np.nan_to_num(run.contrast.arrival_map(), nan=0.0), g)
    add("volume", "truth/arrival_time.nii.gz", "bolus arrival time, s (0 outside vessels)")
    write_volume(out("truth/time_to_peak.nii.gz"), np.nan_to_num(run.contrast.time_to_peak_map(), nan=0.0), g)
    add("time_to_peak", "truth/time_to_peak.nii.gz", "time of peak concentration from the run start, s")
    times = run.geometry.times
    k = max(int(run.config.truth_times), 1)
    t_sel = np.linspace(times[0], times[-1], k)
    from ..formats.sequence import write_volume_sequence

    seq = np.stack([run.contrast.concentration(float(t)) for t in t_sel])
    write_volume_sequence(out("truth/iodine_4d.seq.nrrd"), seq, g, t_sel.tolist())
    add("sequence", "truth/iodine_4d.seq.nrrd", f"iodine concentration (mg/ml) at {k} times (s)")
    write_stack(out("truth/iodine_line_integrals.nii.gz"), run.iodine, sp)
    add("truth", "truth/iodine_line_integrals.nii.gz", "noise-free iodine line integrals per frame")
    progress(0.5, "mesh")
    from ..vessels.surface import volume_to_mesh

    mesh = volume_to_mesh(run.vessels.occupancy, g, 0.5)
    mesh.write(out("truth/vessel_mesh.vtp"))
    add("mesh", "truth/vessel_mesh.vtp", "vessel surface (occupancy 0.5 iso-surface), world mm")
    curves_written = _write_centerlines(run.tree, run.vessels, g, out, run.info.get("inflow_world"))
    if curves_written:
        add("centerlines", curves_written, "vessel centerlines with per-point Radius")
    meta = {"config": asdict(run.config), "info": run.info, "frame_times_s": times.tolist()}
    if run.tree is not None:
        meta["tree_node_times"] = node_time_table(run.tree, run.config.bolus)
    (out("truth/simulation.json")).write_text(json.dumps(meta, indent=1, default=_json_default))
    add("truth", "truth/simulation.json", "simulation parameters and bookkeeping")
    if run.tree is not None:
        run.tree.save_json(out("truth/vessel_tree.json"))
        add("truth", "truth/vessel_tree.json", "synthetic vessel tree graph (nodes, radii, parents, path lengths)")
        # the recon-grid mask loses vessels thinner than a voxel: a fine mesh of the tree itself
        tree_mesh(run.tree, spacing=max(0.2, 0.5 * float(run.tree.radii.min()))).write(
            out("truth/vessel_tree_mesh_fine.vtp"))
        add("mesh", "truth/vessel_tree_mesh_fine.vtp", "synthetic tree surface from a fine voxelisation (all calibres)")
    if dicom:
        progress(0.7, "DICOM")
        from ..formats.xa_study import write_xa_study

        # one study, mask and fill runs as two series (the pair that load_study/select_dsa recognise)
        write_xa_study(out("dicom/mask.dcm").parent, run.geometry, mask=_dicom_pixels(run.mask_run, run.config),
                       fill=_dicom_pixels(run.fill_run, run.config), description="angiorecon synthetic rotational",
                       **_dicom_pixels_kwargs(run.config.dicom_display))
        add("dicom", "dicom/mask.dcm", "mask run as legacy multi-frame DICOM XA (per-frame angles)")
        add("dicom", "dicom/fill.dcm", "fill run as legacy multi-frame DICOM XA (same study)")
    idx = np.linspace(0, n - 1, 8).round().astype(int)
    _preview(run.dsa, idx, [f"#{i} t={times[i]:.1f}s" for i in idx], out("preview/dsa_frames.png"),
             "simulated DSA: frames across the rotation (bolus filling over time)")
    add("preview", "preview/dsa_frames.png", "8 DSA frames showing filling over time")
    return outs


def _dicom_pixels(counts: np.ndarray, cfg: Any) -> np.ndarray:
    """Raw counts, or the vendor-like 12-bit log display of :func:`physics.display_transform`."""
    if cfg.dicom_display == "raw":
        return counts
    if cfg.dicom_display == "log":
        return physics.display_transform(counts, cfg.i0, "log", bits=12)
    raise BadInput(f"dicom_display must be 'raw' or 'log', got {cfg.dicom_display!r}")


def _dicom_pixels_kwargs(display: str) -> dict[str, Any]:
    # the log display is ∝ ln(intensity) (brighter = more photons): PS3.3 LOG with sign +1
    return {"intensity_relationship": "LOG", "intensity_sign": 1} if display == "log" else {}


def _write_centerlines(tree: VesselTree | None, vessels: VesselVolume, grid: VolumeGrid,
                       out: Callable[[str], Path], inflow: list[float] | None) -> str | None:
    from ..formats.markups import write_markups_curves

    if tree is not None and inflow is None:
        tree.write_centerlines(out("truth/centerlines.mrk.json"))
        return "truth/centerlines.mrk.json"
    from ..vessels.centerlines import extract_centerlines

    ct = extract_centerlines(vessels.mask(), grid, seed=inflow)
    if not ct.branches:
        return None
    write_markups_curves(out("truth/centerlines.mrk.json"), [b.points for b in ct.branches],
                         [b.radii for b in ct.branches], [f"branch_{i}" for i in range(len(ct.branches))])
    return "truth/centerlines.mrk.json"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ======================================================================== two-view coronary
#: clinical LCA / RCA view anchors (primary, secondary) in degrees (``coronary_two_view.md`` §2.3)
LCA_VIEWS = [(-25, -35), (5, -30), (0, -10), (-40, 25), (20, 30), (40, 20), (5, 40)]
RCA_VIEWS = [(40, 10), (-75, 10), (0, 25), (-20, 20), (20, 0), (-75, -20), (60, 0)]


@dataclass
class CoronaryConfig:
    """Few-view coronary angiography (static, fully opacified arteries)."""

    views: int = 2
    min_separation_deg: float = 30.0
    max_separation_deg: float = 90.0
    jitter_deg: float = 10.0
    sid: tuple[float, float] = (1000.0, 1200.0)
    sod: tuple[float, float] = (750.0, 800.0)
    pixel_spacing: tuple[float, float] = (0.25, 0.3)
    detector: tuple[int, int] = (512, 512)
    energy_kev: float = 65.0
    i0: float = 5e4
    blur_sigma_px: float = 0.7
    c_peak: float = 150.0                   #: selective injection: 300–370 mg/ml contrast diluted ~1:1 by blood
    vessel_spacing: float = 0.3
    side: str = "both"
    dicom_display: str = "raw"              #: DICOM pixels: "raw" counts (LIN) or vendor-like "log" display
    scatter_fraction: float = 0.0           #: scatter-to-primary ratio of a smooth scatter background
    stenoses: int = 0                       #: number of stenoses (30–70 % diameter reduction) on the tree
    aneurysms: int = 0                      #: number of saccular aneurysms on the tree
    motion_mm: float = 0.0                  #: max heart shift per view (non-simultaneous views, cardiac/breathing)
    motion_deg: float = 0.0                 #: max heart rotation per view

    def validate(self) -> None:
        if self.views < 1:
            raise BadInput(f"need at least one view, got {self.views}")
        if self.side not in ("left", "right", "both"):
            raise BadInput(f"coronary side must be left, right or both, got {self.side!r}")


@dataclass
class CoronaryViews:
    geometry: ConeBeamGeometry                #: one view per frame, DICOM LPS, isocentre at the origin
    counts: np.ndarray                        #: [V, H, W] detected counts (fill, no mask run)
    iodine: np.ndarray                        #: [V, H, W] noise-free iodine line integrals
    masks_2d: np.ndarray                      #: [V, H, W] bool vessel masks (projected lumen)
    tree: VesselTree
    vessels: VesselVolume
    config: CoronaryConfig
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> np.ndarray:
        """[V, H, W] float32 ``−ln(N/I0)``, vessels bright: the log-domain views of ``LoadedViews.images``,
        so ``segment_views`` takes simulated views as they are."""
        return physics.counts_to_line_integral(self.counts, self.config.i0)


def _view_angles(rng: np.random.Generator, cfg: CoronaryConfig) -> np.ndarray:
    anchors = LCA_VIEWS if cfg.side == "left" else RCA_VIEWS if cfg.side == "right" else LCA_VIEWS + RCA_VIEWS
    anchors = np.asarray(anchors, dtype=np.float64)

    def direction(a: np.ndarray) -> np.ndarray:
        pa, sb = np.deg2rad(a[..., 0]), np.deg2rad(a[..., 1])
        return np.stack([np.sin(pa) * np.cos(sb), -np.cos(pa) * np.cos(sb), np.sin(sb)], axis=-1)

    for _ in range(2000):
        pick = anchors[rng.choice(len(anchors), cfg.views, replace=False)] + \
            rng.uniform(-cfg.jitter_deg, cfg.jitter_deg, (cfg.views, 2))
        d = direction(pick)
        sep = np.rad2deg(np.arccos(np.clip(d @ d.T, -1, 1)))
        off = sep[~np.eye(cfg.views, dtype=bool)]
        if cfg.views == 1 or (off.min() >= cfg.min_separation_deg and off.max() <= cfg.max_separation_deg):
            return pick
    raise BadInput(f"cannot draw {cfg.views} views {cfg.min_separation_deg}–{cfg.max_separation_deg}° apart")


def simulate_coronary(hu: np.ndarray | None = None, grid: VolumeGrid | None = None, *,
                      config: CoronaryConfig | None = None, heart: HeartModel | None = None, seed: int = 0,
                      progress: Progress = _noop) -> CoronaryViews:
    """A coronary tree on a heart ellipsoid seen from a few clinical C-arm views.

    ``hu``/``grid``: optional CT background, centred on the isocentre (the heart centre); without it
    the background is a 300 × 220 mm elliptic cylinder of density 0.45 (chest-like attenuation).
    """
    from ..operators import forward_project

    cfg = config or CoronaryConfig()
    cfg.validate()
    rng = np.random.default_rng(seed)
    heart = heart or HeartModel()
    progress(0.05, "coronary tree")
    tree = grow_coronary_tree(rng, heart=heart, side=cfg.side)
    lesions: list[dict[str, Any]] = []
    if cfg.stenoses or cfg.aneurysms:
        tree, lesions = add_lesions(tree, rng, stenoses=cfg.stenoses, aneurysms=cfg.aneurysms)
    lo, hi = tree.bounds()
    centre = (lo + hi) / 2
    shift = np.eye(4)
    shift[:3, 3] = -centre          # isocentre on the middle of the coronary tree, as a clinician centres it
    tree = tree.transformed(shift)
    lesions = _shift_lesions(lesions, -centre)
    if lesions:
        tree.meta["lesions"] = lesions
    vgrid = tree_grid(tree, cfg.vessel_spacing)
    progress(0.2, "voxelise")
    vessels = voxelize_tree(tree, vgrid, supersampling=3)
    angles = _view_angles(rng, cfg)
    sid = rng.uniform(*cfg.sid, cfg.views)
    sod = rng.uniform(*cfg.sod, cfg.views)
    pix = float(rng.uniform(*cfg.pixel_spacing))
    views = [ConeBeamGeometry.from_xa_angles([a[0]], [a[1]], s, o, (pix, pix), cfg.detector)
             for a, s, o in zip(angles, sid, sod)]
    geom = ConeBeamGeometry(np.vstack([v.source for v in views]), np.vstack([v.det_center for v in views]),
                            np.vstack([v.det_u for v in views]), np.vstack([v.det_v for v in views]),
                            cfg.detector, None, {"frame": "DICOM patient LPS, isocentre at origin",
                                                 "primary_deg": angles[:, 0].tolist(),
                                                 "secondary_deg": angles[:, 1].tolist(), "sid": sid.tolist(),
                                                 "sod": sod.tolist(), "imager_pixel_spacing": [pix, pix]})
    if hu is None:
        bgrid = VolumeGrid.centered((160, 120, 120), 2.0, center=(0.0, -centre[1], 0.0))
        c = bgrid.voxel_centers()
        rho = np.sqrt((c[..., 0] / 150.0) ** 2 + ((c[..., 1] + centre[1]) / 110.0) ** 2)
        frac = np.clip(0.5 + (1.0 - rho) * 110.0 / 2.0, 0.0, 1.0)   # anti-aliased elliptic cylinder
        # mean density 0.45 g/ml: a lung-dominated chest (~10 cm water-equivalent AP), not solid water
        mu = (0.45 * physics.mu_water(cfg.energy_kev) * frac).astype(np.float32)
    else:
        if grid is None:
            raise BadInput("a CT background needs its grid")
        bgrid, _ = centered_grid(grid)
        mu = physics.hu_to_mu(hu, cfg.energy_kev)
    progress(0.4, "project")
    p_bg = forward_project(mu, bgrid, geom)
    # the heart moves between non-simultaneous views while the spine does not: each view sees the
    # vessels through its own moved geometry; the files keep the nominal (scanner) geometry
    motions = [physics.random_motion(rng, cfg.motion_deg, cfg.motion_mm) if cfg.motion_mm or cfg.motion_deg
               else np.eye(4) for _ in range(cfg.views)]
    seen = [physics.move_patient(geom.subset([v]), motions[v]) for v in range(cfg.views)]
    vgeom = ConeBeamGeometry(np.vstack([g.source for g in seen]), np.vstack([g.det_center for g in seen]),
                             np.vstack([g.det_u for g in seen]), np.vstack([g.det_v for g in seen]), cfg.detector)
    thick = forward_project(vessels.occupancy, vgrid, vgeom)
    iodine = (physics.iodine_mu_per_mg_ml(cfg.energy_kev) * cfg.c_peak * thick).astype(np.float32)
    counts = physics.acquire(p_bg + iodine, cfg.i0, rng, blur_sigma_px=cfg.blur_sigma_px,
                             scatter_fraction=cfg.scatter_fraction,
                             scatter_sigma_px=max(cfg.detector) / 8).astype(np.float32)
    masks_2d = forward_project(vessels.mask().astype(np.float32), vgrid, vgeom) > 0.5 * cfg.vessel_spacing
    info = {"angles_deg": angles.tolist(), "separation_deg": _separation(geom).tolist(),
            "heart_centre_world": (-centre).tolist(),
            "lesions": lesions, "heart_motion_per_view": [m.tolist() for m in motions],
            "heart": tree.meta.get("heart"), "background": "ct" if hu is not None else "chest-ellipse"}
    return CoronaryViews(geom, counts, iodine, masks_2d, tree, vessels, cfg, info)


def _shift_lesions(lesions: list[dict[str, Any]], shift: np.ndarray) -> list[dict[str, Any]]:
    """Lesion positions in the product's world frame (the tree was moved by ``shift``)."""
    return [dict(les, position=(np.asarray(les["position"]) + shift).tolist()) for les in lesions]


def _separation(geom: ConeBeamGeometry) -> np.ndarray:
    d = -geom.source / np.linalg.norm(geom.source, axis=1, keepdims=True)
    return np.rad2deg(np.arccos(np.clip(d @ d.T, -1, 1)))


def write_coronary(views: CoronaryViews, out: Callable[[str], Path], progress: Progress = _noop
                   ) -> list[tuple[str, str, str]]:
    """DICOM XA single frames (one per view) + truth (3D mask, mesh, centerlines, 2D masks)."""
    from ..formats.dicom_xa import write_xa_geometry
    from ..formats.volume import write_stack, write_volume
    from ..vessels.surface import volume_to_mesh

    outs: list[tuple[str, str, str]] = []
    g = views.geometry
    for v in range(g.n_views):
        rel = f"dicom/view_{v + 1}.dcm"
        write_xa_geometry(out(rel), _dicom_pixels(views.counts[v], views.config), g.subset([v]),
                          series_number=v + 1, series_description=f"synthetic coronary view {v + 1}",
                          **_dicom_pixels_kwargs(views.config.dicom_display))
        outs.append(("dicom", rel, f"view {v + 1}: primary {g.meta['primary_deg'][v]:.1f}°, "
                                   f"secondary {g.meta['secondary_deg'][v]:.1f}°"))
    g.save_json(out("geometry.json"))
    outs.append(("dataset", "geometry.json", "engine ConeBeamGeometry of the views (DICOM LPS)"))
    sp = tuple(float(x) for x in g.pixel_spacing[0])
    write_stack(out("truth/masks_2d.nii.gz"), views.masks_2d.astype(np.uint8), sp)
    outs.append(("truth", "truth/masks_2d.nii.gz", "2D vessel masks per view [views, rows, cols]"))
    write_stack(out("truth/iodine_line_integrals.nii.gz"), views.iodine, sp)
    outs.append(("truth", "truth/iodine_line_integrals.nii.gz", "noise-free iodine line integrals per view"))
    progress(0.5, "truth")
    vg = views.vessels.grid
    write_volume(out("truth/vessel_mask.nii.gz"), views.vessels.mask().astype(np.uint8), vg)
    outs.append(("vessel_mask", "truth/vessel_mask.nii.gz", "3D coronary lumen mask"))
    write_volume(out("truth/vessel_occupancy.nii.gz"), views.vessels.occupancy, vg)
    outs.append(("volume", "truth/vessel_occupancy.nii.gz", "3D fractional occupancy"))
    mesh = volume_to_mesh(views.vessels.occupancy, vg, 0.5)
    mesh.write(out("truth/vessel_mesh.vtp"))
    outs.append(("mesh", "truth/vessel_mesh.vtp", "coronary lumen surface, world mm"))
    t = views.tree
    t.write_centerlines(out("truth/centerlines.mrk.json"))
    outs.append(("centerlines", "truth/centerlines.mrk.json", "coronary centerlines with Radius (LM/LAD/LCX/RCA…)"))
    t.save_json(out("truth/vessel_tree.json"))
    outs.append(("truth", "truth/vessel_tree.json", "coronary tree graph"))
    out("truth/simulation.json").write_text(json.dumps({"config": asdict(views.config), "info": views.info},
                                                       indent=1, default=_json_default))
    outs.append(("truth", "truth/simulation.json", "simulation parameters"))
    _preview(views.images, np.arange(g.n_views), [f"view {i + 1}" for i in range(g.n_views)],
             out("preview/views.png"), "simulated coronary angiograms (log domain)", auto_contrast=True)
    outs.append(("preview", "preview/views.png", "the simulated views"))
    return outs


def node_time_table(tree: VesselTree, bolus: BolusParams) -> dict[str, list[float]]:
    """Arrival and time-to-peak at every tree node (for centreline-level 4D truth)."""
    arr, ttp = node_times(tree, bolus)
    return {"arrival_s": arr.tolist(), "time_to_peak_s": ttp.tolist()}
