"""``demo``: the whole DSA pipeline on the shipped real CT angiogram, scored against the truth.

1. Simulate a rotational DSA run (133 frames over 200°, mask + fill runs, contrast filling and
   washing out during the rotation, Poisson noise) from the shipped aortic CTA and its vessels.
2. Reconstruct 30 of the 133 views with the default dynamic method and with FDK, through exactly
   the ``reconstruct`` task (volume, segmentation, mesh, centerlines, 4D filling, renderings).
3. Score both against the true vessel mask (Dice, clDice, Chamfer, HD95) in ``metrics.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import BadInput
from ..worker import TaskContext, write_json_atomic

HELP = "simulate a rotational DSA run from the shipped CT angiogram, reconstruct 30 views, score vs truth"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--views", type=int, default=30, help="views used for reconstruction (default 30)")
    p.add_argument("--detector", type=int, default=192, help="detector pixels per side (default 192)")
    p.add_argument("--methods", default="kinetic,fdk", help="methods to run and compare (default kinetic,fdk)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"views": args.views, "detector": args.detector, "seed": args.seed,
            "methods": [m for m in args.methods.split(",") if m]}


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..data import load_sample_ct
    from ..simulation.products import RotationalConfig, simulate_rotational, write_rotational
    from . import reconstruct

    views, det, seed = int(job.get("views", 30)), int(job.get("detector", 192)), int(job.get("seed", 0))
    methods = list(job.get("methods") or ["kinetic", "fdk"])
    unknown = [m for m in methods if m not in reconstruct.METHODS]
    if unknown or not 2 <= views <= 133 or det < 32:
        raise BadInput(f"need 2 <= views <= 133, detector >= 32 and known methods; got views={views}, "
                       f"detector={det}, unknown methods {unknown}")
    sim = ctx.reporter.stage("simulate", 0.0, 0.2)
    with ctx.timed("simulate"):
        hu, grid, masks = load_sample_ct("aorta_cta")
        run_ = simulate_rotational(hu, grid, masks, config=RotationalConfig(detector=(det, det)), seed=seed,
                                   progress=lambda f, m="": sim(0.8 * f, m))
        for role, rel, desc in write_rotational(run_, lambda rel: ctx.path(f"simulation/{rel}"), dicom=False):
            ctx.add_output(role, f"simulation/{rel}", desc)
    dataset, truth = ctx.out / "simulation" / "dataset", ctx.out / "simulation" / "truth" / "vessel_mask.nii.gz"
    summary: dict[str, Any] = {"views": views, "frames": 133, "detector": det}
    span = 0.78 / len(methods)
    for i, method in enumerate(methods):
        sub = TaskContext(out=ctx.path(method), final_out=ctx.final_out / method,
                          reporter=ctx.reporter.sub(0.2 + i * span, 0.2 + (i + 1) * span), device=ctx.device)
        sub_job = {"inputs": [str(dataset)], "method": method, "views": views, "params": {"seed": seed},
                   "reference": str(truth), "skip": [] if i == 0 else ["renderings"]}
        with ctx.timed(method):
            reconstruct.run(sub_job, sub)
        for o in sub.outputs:
            ctx.outputs.append({**o, "path": f"{method}/{o['path']}"})
        import json

        m = json.loads((sub.out / "metrics.json").read_text())
        summary[method] = {"dice": m["volume"]["dice"], "cldice": m["volume"]["cldice"],
                           "chamfer_mm": m["surface"]["cd_sum"], "hd95_mm": m["surface"]["hd95"],
                           "seconds": ctx.timings[method]}
        ctx.log(f"{method}: Dice {summary[method]['dice']:.3f}, clDice {summary[method]['cldice']:.3f}, "
                f"Chamfer {summary[method]['chamfer_mm']:.2f} mm, HD95 {summary[method]['hd95_mm']:.2f} mm, "
                f"{summary[method]['seconds']:.0f} s")
    write_json_atomic(ctx.path("metrics.json"), summary)
    ctx.add_output("metrics", "metrics.json", "each method against the true vessel mask")
    ctx.extra["metrics"] = summary
