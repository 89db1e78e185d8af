"""SyntheticDSA speed benchmark: a 133-frame 256² rotational DSA run from the shipped real CTA.

Prints the wall time of the whole simulation (vessels from the real masks, geodesic bolus timing,
mask-run CT projection, per-frame iodine projection, Beer–Lambert + Poisson + blur for both runs)
and, as the peer measured in the same run, the time of one plain forward projection of the CT over
the same 133 views; the ratio is the simulator's overhead over a single projection pass. Also
times one ``PairGenerator.sample()`` (256²) and writes a preview PNG of DSA frames showing the
filling over time.

Usage: ``python benchmarks/bench_simulation.py [--frames 133] [--detector 256] [--source real|synthetic|both]
[--out DIR]``  (target: < 2 minutes on 2 cores for the default run)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from angiorecon.data import load_sample_ct  # noqa: E402
from angiorecon.operators import forward_project  # noqa: E402
from angiorecon.simulation import physics  # noqa: E402
from angiorecon.simulation.pairs import PairGenerator  # noqa: E402
from angiorecon.simulation.products import (RotationalConfig, _preview, centered_grid,  # noqa: E402
                                            simulate_rotational)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=133)
    ap.add_argument("--detector", type=int, default=256)
    ap.add_argument("--source", choices=("real", "synthetic", "both"), default="real")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "angiorecon_bench_simulation")
    a = ap.parse_args()
    import numba

    print(f"threads: numba {numba.get_num_threads()}")
    hu, grid, masks = load_sample_ct("aorta_cta")
    cfg = RotationalConfig(frames=a.frames, detector=(a.detector, a.detector))
    # warm-up (numba compile / cache load) on a tiny run so the timings below are steady-state
    simulate_rotational(hu, grid, masks, vessel_source=a.source,
                        config=RotationalConfig(frames=2, detector=(16, 16)), seed=0)
    t0 = time.perf_counter()
    run = simulate_rotational(hu, grid, masks, vessel_source=a.source, config=cfg, seed=0)
    t_sim = time.perf_counter() - t0
    cgrid, _ = centered_grid(grid)
    mu = physics.hu_to_mu(hu, cfg.energy_kev)
    t0 = time.perf_counter()
    forward_project(mu, cgrid, run.geometry)
    t_proj = time.perf_counter() - t0
    gen = PairGenerator(hu, grid, vessel_mask=masks["aorta"], detector=(256, 256), seed=0)
    gen.sample()
    t0 = time.perf_counter()
    n_pairs = 5
    for _ in range(n_pairs):
        gen.sample()
    t_pair = (time.perf_counter() - t0) / n_pairs
    a.out.mkdir(parents=True, exist_ok=True)
    n = run.geometry.n_views
    idx = np.linspace(0, n - 1, 8).round().astype(int)
    png = a.out / "simulation_preview.png"
    _preview(run.dsa, idx, [f"#{i} t={run.geometry.times[i]:.1f}s" for i in idx], png,
             f"simulated rotational DSA ({a.source} vessels): filling over the rotation")
    fill = run.iodine.reshape(n, -1).sum(axis=1)
    print(f"rotational run {n}x{a.detector}^2 ({a.source} vessels): {t_sim:.1f} s "
          f"(target < 120 s)")
    print(f"peer: plain CT forward projection, same {n} views: {t_proj:.1f} s")
    print(f"ratio simulator / one projection pass: {t_sim / t_proj:.2f}")
    print(f"PairGenerator.sample() 256^2: {t_pair:.2f} s per pair")
    print(f"iodine in frame (sum of line integrals) first/peak/last: {fill[0]:.1f} / {fill.max():.1f} "
          f"(frame {int(np.argmax(fill))}) / {fill[-1]:.1f}")
    print(f"DSA max {run.dsa.max():.3f}; preview: {png}")


if __name__ == "__main__":
    main()
