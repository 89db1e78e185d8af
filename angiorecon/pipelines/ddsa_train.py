"""``ddsa-train``: train the deep-DSA network on pairs simulated on the fly from real CT.

``angiorecon ddsa-train --out DIR [--steps N --batch B --lr LR --schedule cosine|step --loss l1|l2
--gan --amp --resume CKPT --seed S --train-ct NAME --val-ct NAME --vessels coronary|trees|mixed]``

Pairs come from the simulation engine (:mod:`angiorecon.ddsa.sources`): with ``--vessels coronary``
(default) selective coronary injections (:func:`~angiorecon.simulation.products.simulate_coronary`)
seen from random C-arm views over the CT, with ``trees`` the body-wide synthetic trees of the pair
generator; a pool of ``--pool`` frames is simulated first and then cropped and augmented afresh for
every sample (collimator shutters, 8-bit display, LUTs, noise, blur; :mod:`angiorecon.ddsa.data`). Validation uses full frames of a *different* CT
(``--val-ct``). Outputs: ``last.pt``/``best.pt`` checkpoints (resumable), ``ddsa_weights.pt`` (the
inference file of the best checkpoint), ``history.json`` and the manifest.

Multi-GPU / multi-node: start the same command with ``torchrun --nproc_per_node N -m angiorecon
ddsa-train ...`` (command-line arguments, not ``--job``); each rank simulates its own pool, only rank 0
writes to ``--out`` (other ranks' worker folders go to a temporary directory).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..worker import TaskContext

HELP = "train the deep-DSA network on simulated pairs (CPU, CUDA, multi-GPU with torchrun)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=2000, help="generator steps in total")
    g.add_argument("--batch", type=int, default=8, help="samples per step and rank")
    g.add_argument("--patch", type=int, default=128, help="training crop size (pixels)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--schedule", choices=("cosine", "step"), default="cosine")
    g.add_argument("--loss", choices=("l1", "l2"), default="l1")
    g.add_argument("--gan", action="store_true", help="conditional WGAN-GP (critic on input/output pairs)")
    g.add_argument("--n-critic", type=int, default=4, help="critic steps per generator step (--gan)")
    g.add_argument("--l1-weight", type=float, default=10.0, help="generator loss = w·L1 + adversarial (--gan)")
    g.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; ignored on CPU)")
    g.add_argument("--time-budget", type=float, default=0.0, metavar="MIN",
                   help="stop after MIN minutes of training; the LR schedule follows the budget too")
    g.add_argument("--resume", help="checkpoint (last.pt) to continue from")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    n = p.add_argument_group("network")
    n.add_argument("--arch", choices=("light", "anchor"), default="light")
    n.add_argument("--width", type=int, help="channels of the first level (overrides the preset)")
    n.add_argument("--depth", type=int, help="number of down-samplings (overrides the preset)")
    n.add_argument("--norm", choices=("none", "batch", "instance", "group"))
    n.add_argument("--up-mode", choices=("transpose", "bilinear"))
    n.add_argument("--down-mode", choices=("maxpool", "conv"))
    n.add_argument("--dropout", type=float)
    d = p.add_argument_group("data")
    d.add_argument("--train-ct", default="aorta_cta",
                   help="CT for training pairs: a sample name (angiorecon.data) or a HU volume path [::VESSEL_MASK]")
    d.add_argument("--val-ct", required=True,
                   help="a different CT (name or path[::MASK]) for validation on held-out anatomy")
    d.add_argument("--vessels", choices=("coronary", "trees", "mixed"), default="coronary",
                   help="coronary: selective coronary injections over the CT (XCA-like); trees: body-wide "
                        "synthetic (or the CT's real) vessels at IV-to-selective iodine; mixed: half each")
    d.add_argument("--iodine", type=float, nargs=2, metavar=("LO", "HI"),
                   help="iodine amount augmentation range (x k, log-uniform); default 0.7 2 for coronary, "
                        "1 10 otherwise")
    d.add_argument("--pool", type=int, default=256, help="simulated training frames (then augmented crops)")
    d.add_argument("--val-frames", type=int, default=16)
    d.add_argument("--detector", type=int, default=256, help="simulated detector size (square, pixels)")
    d.add_argument("--val-every", type=int, default=100)
    d.add_argument("--ckpt-every", type=int, default=250)


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and rank != 0:
        # only rank 0 writes to --out; the others' worker folders live in a private temporary dir,
        # removed when the process exits
        private = tempfile.mkdtemp(prefix=f"angiorecon-ddsa-rank{rank}-")
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        args.out = Path(private) / "out"
        args.events = "quiet"
    overrides = {k: v for k, v in {"width": args.width, "depth": args.depth, "norm": args.norm,
                                    "up_mode": args.up_mode, "down_mode": args.down_mode,
                                    "dropout": args.dropout}.items() if v is not None}
    return {
        "train": {"steps": args.steps, "batch": args.batch, "patch": args.patch, "lr": args.lr,
                  "weight_decay": args.weight_decay, "schedule": args.schedule, "loss": args.loss,
                  "gan": args.gan, "n_critic": args.n_critic, "l1_weight": args.l1_weight, "amp": args.amp,
                  "seed": args.seed, "arch": args.arch, "arch_overrides": overrides,
                  "val_every": args.val_every, "ckpt_every": args.ckpt_every, "workers": args.workers,
                  "time_budget_min": args.time_budget,
                  "augment": {"iodine": list(args.iodine or ((0.7, 2.0) if args.vessels == "coronary" else (1.0, 10.0)))}},
        "data": {"train_ct": args.train_ct, "val_ct": args.val_ct, "pool": args.pool, "vessels": args.vessels,
                 "val_frames": args.val_frames, "detector": args.detector},
        "resume": str(Path(args.resume).absolute()) if args.resume else None,
    }


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    import torch.distributed as dist

    from ..ddsa.data import full_frame_pairs
    from ..ddsa.sources import training_pool
    from ..ddsa.train import TrainConfig, Trainer, export_weights, init_distributed, load_checkpoint

    try:
        cfg = TrainConfig(**job.get("train", {}))
    except TypeError as exc:
        raise BadInput(f"ddsa-train job: {exc}") from None
    data = dict(job.get("data", {}))
    if not data.get("val_ct"):
        raise BadInput("ddsa-train needs a validation CT (--val-ct) different from the training CT")
    if data.get("train_ct") == data.get("val_ct"):
        raise BadInput("--val-ct must differ from --train-ct (validation is on a held-out CT)")
    info = init_distributed(ctx.device)
    t0 = time.perf_counter()
    detector = (int(data.get("detector", 256)),) * 2
    with ctx.timed("simulate"):
        vessels = str(data.get("vessels", "coronary"))
        pool = training_pool(data.get("train_ct", "aorta_cta"), int(data.get("pool", 256)), vessels=vessels,
                             seed=cfg.seed + 7919 * info.rank, detector=detector,
                             progress=lambda f, m: ctx.progress(0.15 * f, "simulate", m))
        val_source = training_pool(data["val_ct"], int(data.get("val_frames", 16)), vessels=vessels,
                                   seed=10_000 + cfg.seed, detector=detector,
                                   progress=lambda f, m: ctx.progress(0.15 + 0.05 * f, "simulate", f"validation {m}"))
    val_frames = full_frame_pairs(val_source, len(val_source), seed=cfg.seed) if info.is_main else None
    trainer = Trainer(cfg, pool, device=ctx.device, dist_info=info)
    if job.get("resume"):
        trainer.resume(job["resume"])
        ctx.log(f"resumed from {job['resume']} at step {trainer.step}")
    out = ctx.out if info.is_main else None
    with ctx.timed("train"):
        trainer.fit(val_frames=val_frames, out_dir=out,
                    progress=lambda f, m: ctx.progress(0.2 + 0.78 * f, "train", m), log=ctx.log)
    if info.world > 1:
        dist.barrier()
    if not info.is_main:
        return
    best = ctx.out / ("best.pt" if (ctx.out / "best.pt").exists() else "last.pt")
    wall = time.perf_counter() - t0
    meta = {"train_ct": data.get("train_ct"), "val_ct": data.get("val_ct"), "vessels": vessels, "pool": len(pool),
            "seed": cfg.seed, "wall_seconds": round(wall, 1), "world_size": info.world,
            "device": ctx.device, "selected": best.name}
    export_weights(load_checkpoint(best), ctx.path("ddsa_weights.pt"), **meta)
    ctx.path("history.json").write_text(json.dumps(trainer.history, indent=1))
    ctx.add_output("model", "last.pt", "last training checkpoint (resumable: --resume)")
    if best.name == "best.pt":
        ctx.add_output("model", "best.pt", "checkpoint with the best validation PSNR")
    ctx.add_output("model", "ddsa_weights.pt", f"inference weights ({best.name}) for `angiorecon ddsa --model`")
    ctx.add_output("metrics", "history.json", "validation history (L1, PSNR, Pearson r per evaluation)")
    last = trainer.history[-1] if trainer.history else {}
    ctx.extra["ddsa_train"] = {**meta, "final": last, "steps": trainer.step}
    ctx.log(f"trained {trainer.step} steps in {wall:.0f} s; final validation {last}")
