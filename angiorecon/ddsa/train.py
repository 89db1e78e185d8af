"""Deep-DSA training: U-Net (L1/L2) or conditional WGAN-GP, AdamW, cosine/step LR, AMP on CUDA, DDP.

One :class:`Trainer` serves the CLI task ``ddsa-train``, the tests and ``torchrun``:

* **distributed**: when ``WORLD_SIZE > 1`` (torchrun / ``torch.distributed.run``) the process group is
  initialised (NCCL on CUDA, Gloo on CPU), the generator is wrapped in ``DistributedDataParallel``,
  the critic's gradients are all-reduced by hand (DDP does not support the double backward of the
  gradient penalty), every rank draws disjoint samples (:class:`~angiorecon.ddsa.data.StepSampler`),
  and only rank 0 writes checkpoints;
* **WGAN-GP** done as the anchor meant it (``synthetic_dsa.md`` §1.9): the critic's gradients are
  zeroed before *each* of its ``n_critic`` steps (the anchor zeroed once and accumulated four), λ = 10,
  generator loss = ``l1_weight``·L1 + adversarial, critic frozen during the generator step, and both
  networks follow the LR schedule;
* **checkpoints** hold model, optimiser, scheduler, AMP scaler, critic, step, the config, the network
  architecture and the intensity domain (:data:`~angiorecon.ddsa.domain.DOMAIN`); resuming continues
  bit-for-bit because samples depend only on their index.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..errors import BadInput
from ..models.critic import Critic, gradient_penalty
from ..models.unet import UNet, build_unet
from .data import Augment, PairDataset, PairSource, StepSampler
from .domain import DOMAIN

CHECKPOINT_FORMAT = "angiorecon-ddsa-checkpoint/1"
WEIGHTS_FORMAT = "angiorecon-ddsa-weights/1"


@dataclass
class TrainConfig:
    """All training hyper-parameters (stored in every checkpoint)."""

    steps: int = 2000
    batch: int = 8
    patch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"          #: cosine (linear warm-up, decay to 1 %) or step (×0.1 at 1/3 and 2/3)
    warmup: int = 50
    loss: str = "l1"                  #: l1 or l2
    grad_clip: float = 1.0
    gan: bool = False
    n_critic: int = 4
    l1_weight: float = 10.0           #: generator loss = l1_weight·L1 + adversarial (anchor: 10)
    gp_weight: float = 10.0           #: WGAN-GP λ
    critic_lr: float = 1e-4
    critic_width: int = 32
    critic_depth: int = 4
    amp: bool = False                 #: mixed precision, CUDA only (ignored on CPU)
    seed: int = 0
    arch: str = "light"
    arch_overrides: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    val_every: int = 100
    ckpt_every: int = 500
    workers: int = 0
    time_budget_min: float = 0.0     #: > 0: stop after this wall time; the LR schedule then runs on
                                     #: max(step / steps, elapsed / budget) so it still decays to its end

    def validate(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.patch < 8:
            raise BadInput(f"steps, batch must be >= 1 and patch >= 8 (got {self.steps}, {self.batch}, {self.patch})")
        if self.schedule not in ("cosine", "step"):
            raise BadInput(f"--schedule must be cosine or step, got {self.schedule!r}")
        if self.loss not in ("l1", "l2"):
            raise BadInput(f"--loss must be l1 or l2, got {self.loss!r}")
        if self.lr <= 0:
            raise BadInput(f"--lr must be > 0, got {self.lr}")


# ----------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def rank_device(device: str, info: DistInfo) -> torch.device:
    if device.startswith("cuda") and info.world > 1:
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


# ----------------------------------------------------------------------------- metrics
def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB) of a batch, peak = the batch target's max − min (crops without vessels have no peak
    of their own, so a per-image peak would be meaningless)."""
    p, t = pred.detach().float(), target.detach().float()
    mse = float(((p - t) ** 2).mean())
    peak = float(t.max() - t.min())
    return 10 * math.log10(max(peak, 1e-6) ** 2 / max(mse, 1e-12))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    return float((a @ b) / max(np.sqrt((a @ a) * (b @ b)), 1e-12))


def lr_lambda(cfg: TrainConfig, elapsed: Callable[[], float] | None = None) -> Callable[[int], float]:
    """LR factor per step: warm-up, then cosine or step decay over the run (steps or time budget)."""
    warm = max(0, min(cfg.warmup, cfg.steps // 10))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
        if elapsed is not None and cfg.time_budget_min > 0:
            t = max(t, min(1.0, elapsed() / (60 * cfg.time_budget_min)))
        if cfg.schedule == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
        return 0.1 ** min(2, int(3 * t))

    return f


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Owns the networks, optimisers, schedules and the sample stream of one training run."""

    def __init__(self, cfg: TrainConfig, source: PairSource, *, device: str = "cpu",
                 dist_info: DistInfo | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.info = dist_info or DistInfo()
        self.device = rank_device(device, self.info)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model: UNet = build_unet(cfg.arch, **cfg.arch_overrides).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.5, 0.999) if cfg.gan else (0.9, 0.999))
        self._t_start = time.perf_counter()
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, self.elapsed))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.critic: Critic | None = None
        if cfg.gan:
            self.critic = Critic(in_ch=2, width=cfg.critic_width, depth=cfg.critic_depth).to(self.device)
            self.opt_c = torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr, weight_decay=0.0,
                                           betas=(0.5, 0.999))
            self.sched_c = torch.optim.lr_scheduler.LambdaLR(self.opt_c, lr_lambda(cfg, self.elapsed))
        self.net: nn.Module = self.model
        if self.info.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.step = 0
        self.dataset = PairDataset(source, cfg.patch, Augment(**_augment_kwargs(cfg.augment)), seed=cfg.seed)
        self.history: list[dict[str, float]] = []

    def elapsed(self) -> float:
        """Wall seconds of training so far (for the time budget)."""
        return time.perf_counter() - self._t_start

    def out_of_time(self) -> bool:
        budget = self.cfg.time_budget_min
        if budget <= 0:
            return False
        flag = torch.tensor([float(self.elapsed() >= 60 * budget)])
        if self.info.world > 1:  # all ranks must stop at the same step
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # -- data ---------------------------------------------------------------------------------
    def batches(self, steps: int):
        sampler = StepSampler(self.cfg.batch, self.step, self.info.rank, self.info.world, steps)
        loader = DataLoader(self.dataset, batch_size=self.cfg.batch, sampler=sampler,
                            num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda")
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    # -- one optimisation step --------------------------------------------------------------
    def _pixel_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = pred.float()
        return F.l1_loss(pred, target) if self.cfg.loss == "l1" else F.mse_loss(pred, target)

    def _allreduce_grads(self, module: nn.Module) -> None:
        if self.info.world > 1:
            for p in module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= self.info.world

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One generator step (preceded by ``n_critic`` critic steps with --gan)."""
        cfg = self.cfg
        self.net.train()
        stats: dict[str, float] = {}
        if self.critic is not None:
            self.critic.train()
            self.critic.requires_grad_(True)
            with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
                fake = self.net(x).float()
            for _ in range(cfg.n_critic):
                self.opt_c.zero_grad(set_to_none=True)  # per critic step: no accumulation
                w_dist = self.critic(x, y).mean() - self.critic(x, fake).mean()
                gp = gradient_penalty(self.critic, x, y, fake, cfg.gp_weight)
                (gp - w_dist).backward()
                self._allreduce_grads(self.critic)
                self.opt_c.step()
            self.sched_c.step()
            self.critic.requires_grad_(False)  # generator step must not touch the critic
            stats.update(w_distance=float(w_dist.detach()), gp=float(gp.detach()))
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            pred = self.net(x)
        pix = self._pixel_loss(pred, y)
        loss = pix
        if self.critic is not None:
            adv = -self.critic(x, pred.float()).mean()
            loss = cfg.l1_weight * pix + adv
            stats["adv"] = float(adv.detach())
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        stats.update(loss=float(pix.detach()), psnr=psnr(pred, y), lr=self.sched.get_last_lr()[0])
        return stats

    # -- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, frames: list[tuple[np.ndarray, np.ndarray, float]], batch: int = 4) -> dict[str, float]:
        """L1, PSNR and Pearson r on full un-augmented frames (DOMAIN units)."""
        self.model.eval()
        l1s, ps, rs = [], [], []
        for i in range(0, len(frames), batch):
            chunk = frames[i:i + batch]
            x = torch.from_numpy(np.stack([c[0] for c in chunk]))[:, None].to(self.device)
            y = torch.from_numpy(np.stack([c[1] for c in chunk]))[:, None].to(self.device)
            pred = self.model(x).float()
            l1s.append(float(F.l1_loss(pred, y)))
            ps += [psnr(a, b) for a, b in zip(pred, y)]
            rs += [pearson(a, b) for a, b in zip(pred.cpu().numpy(), y.cpu().numpy())]
        return {"val_l1": float(np.mean(l1s)), "val_psnr": float(np.mean(ps)), "val_r": float(np.mean(rs))}

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "config": asdict(self.cfg),
            "arch": self.model.config.to_dict(),
            "domain": DOMAIN,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
        }
        if self.critic is not None:
            state.update(critic=self.critic.state_dict(), critic_optimizer=self.opt_c.state_dict(),
                         critic_scheduler=self.sched_c.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise BadInput(f"not a deep-DSA training checkpoint (format {state.get('format')!r})")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        torch.set_rng_state(state["torch_rng"])
        if self.critic is not None:
            if "critic" not in state:
                raise BadInput("--gan resume needs a checkpoint trained with --gan (it has no critic)")
            self.critic.load_state_dict(state["critic"])
            self.opt_c.load_state_dict(state["critic_optimizer"])
            self.sched_c.load_state_dict(state["critic_scheduler"])

    def save(self, path: str | Path) -> Path:
        """Atomic checkpoint write (rank 0 only; other ranks return without writing)."""
        path = Path(path)
        if self.info.is_main:
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
        return path

    def resume(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path))

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, steps: int | None = None, *, val_frames: list | None = None, out_dir: Path | None = None,
            progress: Callable[[float, str], None] | None = None, log: Callable[[str], None] | None = None,
            ) -> list[dict[str, float]]:
        """Train up to ``cfg.steps`` (or ``steps`` more); validate, checkpoint and report on the way."""
        cfg = self.cfg
        todo = (cfg.steps - self.step) if steps is None else steps
        records: list[dict[str, float]] = []
        t0 = time.perf_counter()
        self._t_start = t0
        best = -math.inf
        for x, y in self.batches(max(todo, 0)):
            rec = self.train_step(x, y)
            rec["step"] = self.step
            records.append(rec)
            stop = self.out_of_time()
            last = self.step >= cfg.steps or len(records) == todo or stop
            if val_frames and (self.step % cfg.val_every == 0 or last):
                rec.update(self.validate(val_frames))
                self.history.append({k: float(v) for k, v in rec.items()})
                if log and self.info.is_main:
                    log(f"step {self.step}: train {cfg.loss.upper()} {rec['loss']:.4f} PSNR {rec['psnr']:.1f} dB | "
                        f"val L1 {rec['val_l1']:.4f} PSNR {rec['val_psnr']:.2f} dB r {rec['val_r']:.3f}")
                if out_dir is not None and rec["val_psnr"] > best:
                    best = rec["val_psnr"]
                    self.save(out_dir / "best.pt")
            if out_dir is not None and (self.step % cfg.ckpt_every == 0 or last):
                self.save(out_dir / "last.pt")
            if progress:
                rate = len(records) / max(time.perf_counter() - t0, 1e-9)
                frac = len(records) / max(todo, 1)
                if cfg.time_budget_min > 0:
                    frac = max(frac, min(1.0, self.elapsed() / (60 * cfg.time_budget_min)))
                progress(frac,
                         f"step {self.step}/{cfg.steps} loss {rec['loss']:.4f} PSNR {rec['psnr']:.1f} dB "
                         f"({rate:.2f} it/s)")
            if stop:
                if log and self.info.is_main:
                    log(f"time budget of {cfg.time_budget_min:g} min reached at step {self.step}")
                break
        return records


def _augment_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint or exported weights file; unreadable or foreign files raise BadInput."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise BadInput(f"cannot read model file {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        raise BadInput(f"model file {path} is not an angiorecon deep-DSA checkpoint")
    return state


def export_weights(checkpoint: dict[str, Any], path: str | Path, **meta: Any) -> Path:
    """Inference-only weights (architecture, state dict, domain, config, metadata) — what ships."""
    out = {"format": WEIGHTS_FORMAT, "arch": checkpoint["arch"], "domain": checkpoint["domain"],
           "config": checkpoint["config"], "step": checkpoint["step"], "model": checkpoint["model"],
           "meta": meta}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return path
