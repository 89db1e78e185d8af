"""Speed of the CPU projectors and FDK against itk-rtk, measured in the same run on the same threads.

    python benchmarks/bench_projectors.py [--size 256] [--threads 2]

Cases (issue 3): forward projection of 133 views of size² pixels from a size³ volume (Joseph both;
once as is, once with no zero voxel so our empty-margin skipping cannot help),
its back-projection (Joseph adjoint both), FDK of 30 of those views to size³ (Parker short scan
both, ram-lak). The phantom is a large ellipsoid plus a few vessels so the projections are dense
(our adjoint skips zero pixels; a dense input removes that advantage). Prints each time and the
ratio RTK time / ours (> 1 = we are faster), plus the relative difference of the results.
Numba is warmed up (JIT/cache load) before timing; RTK gets a small warm-up call too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="volume voxels per side and detector pixels per side")
    ap.add_argument("--views", type=int, default=133)
    ap.add_argument("--fdk-views", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="timed repetitions (best is reported)")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))

    import itk
    import numba
    import numpy as np

    from angiorecon.geometry import ConeBeamGeometry, VolumeGrid, uniform_view_indices
    from angiorecon.operators import back_project, fdk, forward_project
    from angiorecon.operators import rtk_bridge as rb
    from angiorecon.simulation.phantoms import AnalyticPhantom, Cylinder, Ellipsoid

    numba.set_num_threads(args.threads)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(args.threads)

    n = args.size
    fov = 160.0                      # mm; half-fan angle 8.6° < the 10° over-scan of a 200° run
    voxel = fov / n
    grid = VolumeGrid.centered((n, n, n), voxel)
    dso, dsd = 750.0, 1200.0
    pitch = 1.05 * fov * np.sqrt(2) * dsd / dso / n
    geom = ConeBeamGeometry.circular(np.linspace(0, np.deg2rad(200), args.views), dso, dsd, (n, n), pitch)
    phantom = AnalyticPhantom((Ellipsoid((0, 0, 0), (70, 60, 65), 0.01),
                               Cylinder((-38, -25, -56), (31, 19, 56), 4, 0.02),
                               Cylinder((25, -38, -50), (-19, 38, 44), 2.5, 0.02)))
    t0 = time.perf_counter()
    vol = phantom.voxelize(grid, supersample=1)
    print(f"size {n}^3, {args.views} views of {n}^2, FDK from {args.fdk_views} views, {args.threads} threads "
          f"(numba {numba.get_num_threads()}, ITK {itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()}); "
          f"phantom {time.perf_counter() - t0:.1f} s", flush=True)

    # warm-up: numba JIT / cache load and RTK's lazy module loading, on a tiny problem
    small_g = VolumeGrid.centered((16, 16, 16), 16.0)
    small = ConeBeamGeometry.circular(np.linspace(0, 3.5, 12), dso, dsd, (16, 16), 20.0)
    sv = np.ones(small_g.shape, np.float32)
    sp = forward_project(sv, small_g, small)
    back_project(sp, small_g, small)
    fdk(sp, small_g, small)
    rb.rtk_forward_project(sv, small_g, small)
    rb.rtk_back_project(sp, small_g, small)
    rb.rtk_fdk(sp, small_g, small, short_scan=True)

    def best(fn):
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    rows = []
    t_ours, p_ours = best(lambda: forward_project(vol, grid, geom))
    t_rtk, p_rtk = best(lambda: rb.rtk_forward_project(vol, grid, geom))
    rows.append(("forward projection", t_ours, t_rtk, np.linalg.norm(p_ours - p_rtk) / np.linalg.norm(p_rtk)))
    print(f"{rows[-1][0]:>20}: ours {t_ours:7.2f} s  RTK {t_rtk:7.2f} s  ratio RTK/ours {t_rtk / t_ours:5.2f}", flush=True)

    # our forward projector skips the empty margin around the content; a volume with no zero voxel
    # shows the plain traversal speed
    dense = vol + np.float32(1e-4)
    t_ours, d_ours = best(lambda: forward_project(dense, grid, geom))
    t_rtk, d_rtk = best(lambda: rb.rtk_forward_project(dense, grid, geom))
    rows.append(("forward, no margin", t_ours, t_rtk, np.linalg.norm(d_ours - d_rtk) / np.linalg.norm(d_rtk)))
    print(f"{rows[-1][0]:>20}: ours {t_ours:7.2f} s  RTK {t_rtk:7.2f} s  ratio RTK/ours {t_rtk / t_ours:5.2f}", flush=True)
    del dense, d_ours, d_rtk

    t_ours, b_ours = best(lambda: back_project(p_ours, grid, geom))
    t_rtk, b_rtk = best(lambda: rb.rtk_back_project(p_ours, grid, geom))
    inner = (slice(1, -1),) * 3
    rows.append(("back-projection", t_ours, t_rtk,
                 np.linalg.norm((b_ours - b_rtk)[inner]) / np.linalg.norm(b_rtk[inner])))
    print(f"{rows[-1][0]:>20}: ours {t_ours:7.2f} s  RTK {t_rtk:7.2f} s  ratio RTK/ours {t_rtk / t_ours:5.2f}", flush=True)

    idx = uniform_view_indices(args.views, args.fdk_views)
    sub, psub = geom.subset(idx), np.ascontiguousarray(p_ours[idx])
    t_ours, f_ours = best(lambda: fdk(psub, grid, sub))
    t_rtk, f_rtk = best(lambda: rb.rtk_fdk(psub, grid, sub, short_scan=True))
    rows.append(("FDK", t_ours, t_rtk, np.linalg.norm(f_ours - f_rtk) / np.linalg.norm(f_rtk)))
    print(f"{rows[-1][0]:>20}: ours {t_ours:7.2f} s  RTK {t_rtk:7.2f} s  ratio RTK/ours {t_rtk / t_ours:5.2f}", flush=True)

    print("\ncase                 ours_s   rtk_s  RTK/ours  rel_diff_vs_RTK")
    for name, a, b, d in rows:
        print(f"{name:<20} {a:7.2f} {b:7.2f} {b / a:9.2f}  {d:.2e}")
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} CPUs (other processes share the cores)")


if __name__ == "__main__":
    main()
