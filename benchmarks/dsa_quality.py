"""Sparse-view dynamic DSA quality: every method and the RTK peers on the same simulated runs, one table.

Cases are rotational DSA runs simulated by ``angiorecon simulate rotational`` from the real CT
angiograms shipped in the package (``aorta_cta``, ``pulmonary_cta``): 133 frames over 200°, 256²
detector, 1.5 mm voxels, bolus filling and wash-out during the rotation, Poisson noise. Every
method reconstructs from the same K views (default 30, uniform in frame index).

* Engine methods run as the user runs them — ``python -m angiorecon reconstruct DATASET --method M
  --views K --reference truth/vessel_mask.nii.gz`` in a child process — so their wall time includes
  loading, reconstruction, the automatic segmentation, meshing and centerlines.
* Peers: RTK FDK (Parker short-scan weights) and RTK OS-SART (positivity) from ``itk-rtk`` on the same
  views, segmented by the same automatic rule (``segment_vessels``); their time is reconstruction only.

Scores against the true vessel mask, no alignment: Dice, clDice (true definition), Chamfer = sum of
the two mean one-sided surface distances, HD95 = max of the one-sided 95th percentiles (mm).
Targets for the default method: Dice ≥ 0.90, clDice ≥ 0.90, Chamfer ≤ 2 mm, HD95 ≤ 4 mm, ≤ 5 min.

Usage: ``python benchmarks/dsa_quality.py [--cases aorta_cta,pulmonary_cta] [--views 30]
[--methods kinetic,fdk,sart,rtk-fdk,rtk-sart,vpal,4drgs] [--work DIR] [--seed 1]
[--param vpal:iterations=300 ...] [--sim velocity=60 ...]`` (the `fast` presets of VPAL / 4DRGS take ~40 min each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from angiorecon.formats.dataset import read_dataset  # noqa: E402
from angiorecon.formats.volume import read_volume  # noqa: E402
from angiorecon.geometry import uniform_view_indices  # noqa: E402
from angiorecon.metrics.evaluate import evaluate_volumes  # noqa: E402
from angiorecon.recon.kinetic import PRESETS  # noqa: E402
from angiorecon.vessels.segmentation import segment_vessels  # noqa: E402

ENGINE_METHODS = ("kinetic", "fdk", "sart", "vpal", "4drgs")
PEERS = ("rtk-fdk", "rtk-sart")
TARGETS = {"dice": (0.90, ">="), "cldice": (0.90, ">="), "chamfer": (2.0, "<="), "hd95": (4.0, "<="),
           "seconds": (300.0, "<=")}


def engine(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "angiorecon", *args, "--events", "quiet"], check=True, env=env)


def simulate(case: str, seed: int, work: Path, sim_args: list[str]) -> Path:
    out = work / case / "sim"
    if not (out / "manifest.json").exists():
        engine("simulate", "rotational", "--sample", case, "--seed", str(seed), *sim_args, "--out", str(out))
    return out


def scores(metrics: dict) -> dict[str, float]:
    return {"dice": metrics["volume"]["dice"], "cldice": metrics["volume"]["cldice"],
            "chamfer": metrics["surface"]["cd_sum"], "hd95": metrics["surface"]["hd95"]}


def run_engine_method(method: str, sim: Path, views: int, out: Path, params: list[str]) -> dict[str, float]:
    t0 = time.perf_counter()
    engine("reconstruct", str(sim / "dataset"), "--method", method, "--views", str(views),
           "--reference", str(sim / "truth" / "vessel_mask.nii.gz"), "--skip", "renderings", "--out", str(out),
           "--overwrite", *[a for p in params for a in ("--param", p)])
    seconds = time.perf_counter() - t0
    return {**scores(json.loads((out / "metrics.json").read_text())), "seconds": seconds}


def run_peer(peer: str, sim: Path, views: int) -> dict[str, float]:
    from angiorecon.operators.rtk_bridge import rtk_fdk, rtk_sart

    ds = read_dataset(sim / "dataset")
    idx = uniform_view_indices(ds.geometry.n_views, views)
    proj, geom = ds.line_integrals()[idx], ds.geometry.subset(idx)
    t0 = time.perf_counter()
    if peer == "rtk-fdk":
        vol = rtk_fdk(proj, ds.grid, geom, short_scan=True)
    else:
        vol = rtk_sart(proj, ds.grid, geom, iterations=10, subsets=5)
    seconds = time.perf_counter() - t0
    mask, _ = segment_vessels(np.maximum(vol, 0), ds.grid)
    ref, ref_grid = read_volume(sim / "truth" / "vessel_mask.nii.gz")
    metrics = evaluate_volumes(mask, ref > 0, ref_grid, pred_grid=ds.grid, pred_kind="mask", centerlines=False)
    return {**scores(metrics), "seconds": seconds}


def verdict(row: dict[str, float]) -> str:
    miss = [k for k, (bound, op) in TARGETS.items()
            if not (row[k] >= bound if op == ">=" else row[k] <= bound)]
    return "meets all targets" if not miss else "misses " + ", ".join(miss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="aorta_cta,pulmonary_cta")
    ap.add_argument("--views", type=int, default=30)
    ap.add_argument("--methods", default="kinetic,fdk,sart,rtk-fdk,rtk-sart,vpal,4drgs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "angiorecon_dsa_quality")
    ap.add_argument("--sim", action="append", default=[], metavar="OPTION=VALUE",
                    help="simulator option for a harder/different run, e.g. velocity=60, late-fraction=0.3, "
                         "i0=20000 (repeatable; passed to `simulate rotational --OPTION VALUE`; use its own --work)")
    ap.add_argument("--param", action="append", default=[], metavar="METHOD:KEY=VALUE",
                    help="preset override for one engine method, e.g. vpal:iterations=300 (repeatable)")
    a = ap.parse_args()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ENGINE_METHODS + PEERS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {ENGINE_METHODS + PEERS}")
    params: dict[str, list[str]] = {m: [] for m in ENGINE_METHODS}
    for p in a.param:
        m, sep, kv = p.partition(":")
        if not sep or m not in params or "=" not in kv:
            ap.error(f"--param {p!r}: expected METHOD:KEY=VALUE with METHOD one of {ENGINE_METHODS}")
        params[m].append(kv)
    sim_args = []
    for opt in a.sim:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            ap.error(f"--sim {opt!r}: expected OPTION=VALUE, e.g. velocity=60")
        sim_args += [f"--{key.lstrip('-')}", value]
    print(f"cores: {os.cpu_count()}, views: {a.views}, kinetic fast preset: {PRESETS['fast']}", flush=True)
    if sim_args:
        print(f"simulator options: {' '.join(sim_args)}", flush=True)
    if a.param:
        print(f"preset overrides: {a.param}", flush=True)
    rows: list[tuple[str, str, dict[str, float]]] = []
    for case in [c.strip() for c in a.cases.split(",") if c.strip()]:
        t0 = time.perf_counter()
        sim = simulate(case, a.seed, a.work, sim_args)
        print(f"[{case}] simulated in {time.perf_counter() - t0:.0f} s → {sim}", flush=True)
        for m in methods:
            row = run_peer(m, sim, a.views) if m in PEERS else \
                run_engine_method(m, sim, a.views, a.work / case / m, params.get(m, []))
            rows.append((case, m, row))
            print(f"[{case}] {m:9s} dice {row['dice']:.3f} cldice {row['cldice']:.3f} "
                  f"chamfer {row['chamfer']:.2f} mm hd95 {row['hd95']:.2f} mm {row['seconds']:.0f} s", flush=True)
    print()
    print(f"{'case':14s} {'method':9s} {'Dice':>6s} {'clDice':>6s} {'CD mm':>6s} {'HD95':>6s} {'time s':>7s}  "
          f"{'Dice vs RTK FDK':>15s}")
    for case, m, row in rows:
        peer = next((r for c, n, r in rows if c == case and n == "rtk-fdk"), None)
        ratio = f"{row['dice'] / peer['dice']:.2f}x" if peer else "-"
        print(f"{case:14s} {m:9s} {row['dice']:6.3f} {row['cldice']:6.3f} {row['chamfer']:6.2f} "
              f"{row['hd95']:6.2f} {row['seconds']:7.0f}  {ratio:>15s}")
    for case, m, row in rows:
        if m == "kinetic":
            print(f"default method (kinetic) on {case}: {verdict(row)}")


if __name__ == "__main__":
    main()
