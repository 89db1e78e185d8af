"""``ddsa``: deep DSA on angiography frames — vessel (iodine) images from fill frames, no mask run needed.

``angiorecon ddsa INPUT... --out DIR [--model PATH]``. Inputs: PNG/JPEG/TIFF frames, DICOM XA/RF
(single or multi-frame), NIfTI/NRRD/MHA stacks, or folders of them. Outputs per input, in the input's
format where sensible: PNG/JPEG → 8-bit DSA display PNG (vessels dark); TIFF → float32 TIFF of the DSA
line integrals; NIfTI/NRRD/MHA → float32 stack with the same spacing; DICOM → float32 NIfTI stack with
the imager pixel spacing; plus ``preview/NAME.png`` (input | output, middle frame) and the manifest.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..worker import TaskContext

HELP = "deep DSA: extract vessel images from angiography frames without a mask run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="PNG/TIFF/JPEG frames, DICOM XA/RF files, NIfTI/NRRD/MHA stacks or folders")
    p.add_argument("--model", help="deep-DSA checkpoint or weights (default: the model shipped in the package)")
    p.add_argument("--tile", type=int, default=512, help="frames larger than this are cut into overlapping tiles")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap, blended linearly")
    p.add_argument("--batch", type=int, default=8, help="tiles per network call")


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"inputs": [str(Path(i).absolute()) for i in args.inputs],
            "model": str(Path(args.model).absolute()) if args.model else None,
            "tile": args.tile, "overlap": args.overlap, "batch": args.batch}


def run(job: dict[str, Any], ctx: TaskContext) -> None:
    from ..ddsa.infer import DeepDSA, display_dsa, iter_inputs, read_frames

    inputs = list(iter_inputs(job.get("inputs") or []))
    if not inputs:
        raise BadInput("ddsa needs at least one input file")
    tile, overlap = int(job.get("tile", 512)), int(job.get("overlap", 32))
    if tile < 16 or not 0 <= overlap < tile // 2:
        raise BadInput(f"--tile must be >= 16 and 0 <= --overlap < tile/2 (got {tile}, {overlap})")
    ctx.progress(0.0, "load", "model")
    net = DeepDSA.load(job.get("model"), device=ctx.device, tile=tile, overlap=overlap,
                       batch=max(1, int(job.get("batch", 8))))
    ctx.log(f"model {net.meta['path']} (step {net.meta.get('step')}), domain {net.domain['name']}")
    frames = [read_frames(p) for p in inputs]  # read everything first: bad inputs fail before work
    total = sum(len(f.p) for f in frames)
    done = 0
    results = []
    used: set[str] = set()
    for fr in frames:
        stem = _unique(_stem(fr.path), used)

        def prog(frac: float, n: int = len(fr.p), name: str = fr.path.name) -> None:
            ctx.progress(0.02 + 0.93 * (done + frac * n) / total, "ddsa", f"{name}: frame {round(frac * n)}/{n}")

        with ctx.timed("inference"):
            dsa = net.predict(fr.p, progress=prog)
        done += len(fr.p)
        rel = _write_output(ctx, fr, dsa, stem)
        prev = f"preview/{stem}.png"
        _write_preview(ctx.path(prev), fr.p[len(fr.p) // 2], dsa[len(dsa) // 2], display_dsa)
        ctx.add_output("preview", prev, f"{fr.path.name}: input | deep DSA (middle frame)")
        results.append({"input": str(fr.path), "output": rel, "frames": int(len(fr.p)), "kind": fr.kind, **fr.info})
    ctx.extra["ddsa"] = {"model": net.meta["path"], "model_step": net.meta.get("step"), "domain": net.domain,
                         "inputs": results}
    ctx.progress(1.0, "ddsa", f"{total} frame(s)")


def _stem(path: Path) -> str:
    name = path.name
    for s in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tiff", ".tif",
              ".bmp", ".dcm", ".dicom"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _unique(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def _write_output(ctx: TaskContext, fr: Any, dsa: np.ndarray, stem: str) -> str:
    from PIL import Image

    from ..ddsa.infer import display_dsa
    from ..formats.volume import write_stack

    if fr.kind == "image":
        if len(dsa) == 1:
            rel = f"ddsa/{stem}_ddsa.png"
            Image.fromarray(display_dsa(dsa[0])).save(ctx.path(rel))
        else:
            rel = f"ddsa/{stem}_ddsa.tif"
            pages = [Image.fromarray(display_dsa(d)) for d in dsa]
            pages[0].save(ctx.path(rel), save_all=True, append_images=pages[1:])
        ctx.add_output("images", rel, f"deep DSA of {fr.path.name} (8-bit display, vessels dark)")
    elif fr.kind == "tiff-float":
        rel = f"ddsa/{stem}_ddsa.tif"
        pages = [Image.fromarray(d.astype(np.float32)) for d in dsa]
        pages[0].save(ctx.path(rel), save_all=True, append_images=pages[1:])
        ctx.add_output("images", rel, f"deep DSA of {fr.path.name} (float32 line integrals)")
    else:
        rel = f"ddsa/{stem}_ddsa.nii.gz"
        write_stack(ctx.path(rel), dsa.astype(np.float32), fr.spacing, fr.frame_spacing)
        ctx.add_output("sequence", rel, f"deep DSA of {fr.path.name} [frames, rows, cols] (float32 line integrals)")
    return rel


def _write_preview(path: Path, p: np.ndarray, dsa: np.ndarray, display: Any) -> None:
    from PIL import Image

    lo, hi = np.percentile(p, [0.5, 99.5])
    left = (255 * (1 - np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1))).round().astype(np.uint8)
    gap = np.full((p.shape[0], 4), 128, np.uint8)
    Image.fromarray(np.concatenate([left, gap, display(dsa)], axis=1)).save(path)
