"""Differentiable Joseph projector in plain torch (CPU or CUDA, no compiled extension).

Same rays and the same Joseph sampling as :mod:`.projector_cpu` (so both agree to rounding), written
as gathers over chunks of rays. The autograd backward is the matched back-projection: it recomputes
each chunk's indices and weights and scatters with ``index_add_``, so nothing but the volume is
kept between forward and backward and the gradient is the exact adjoint.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import ConeBeamGeometry, VolumeGrid
from .rays import index_space_views

#: axis orders (dominant, b, c) for dominant axis x, y, z
_ORDER = ((0, 1, 2), (1, 0, 2), (2, 0, 1))


class _Rays:
    """The rays to project, as index-space generators on one device."""

    def __init__(self, grid: VolumeGrid, geometry: ConeBeamGeometry, views: torch.Tensor, rows: torch.Tensor,
                 cols: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
        iv = index_space_views(geometry, grid)
        t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        self.src, self.p00, self.u, self.v = t(iv.src), t(iv.p00), t(iv.u), t(iv.v)
        self.src_w, self.p00_w, self.u_w, self.v_w = t(iv.src_w), t(iv.p00_w), t(iv.u_w), t(iv.v_w)
        self.views, self.rows, self.cols = views.to(device), rows.to(device).double(), cols.to(device).double()
        nz, ny, nx = grid.shape
        self.size = torch.tensor([nx, ny, nz], device=device, dtype=torch.float64)
        self.stride = torch.tensor([1, nx + 2, (nx + 2) * (ny + 2)], device=device, dtype=torch.int64)
        self.order = torch.tensor(_ORDER, device=device, dtype=torch.int64)
        self.padded = (nz + 2) * (ny + 2) * (nx + 2)
        self.shape = grid.shape
        self.dtype = dtype
        self.n = int(views.numel())
        self.max_planes = max(grid.shape)

    def chunk(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat padded-volume indices ``[B, S, 4]`` and weights ``[B, S, 4]`` of rays ``lo:hi``."""
        n, r, c = self.views[lo:hi], self.rows[lo:hi, None], self.cols[lo:hi, None]
        d = self.p00[n] + c * self.u[n] + r * self.v[n] - self.src[n]
        length = torch.linalg.norm(self.p00_w[n] + c * self.u_w[n] + r * self.v_w[n] - self.src_w[n], dim=1)
        a = d.abs().argmax(dim=1)
        perm = self.order[a]                                  # (B, 3): dominant, b, c
        o = self.src[n].gather(1, perm)
        dp = d.gather(1, perm)
        size = self.size[perm]
        stride = self.stride[perm]
        s_lo = torch.zeros_like(length)
        s_hi = torch.ones_like(length)
        for ax in (1, 2):
            da, oa, na = dp[:, ax], o[:, ax], size[:, ax]
            moving = da.abs() > 1e-300
            safe = torch.where(moving, da, torch.ones_like(da))
            s1, s2 = (-1.0 - oa) / safe, (na - oa) / safe
            inside = (oa >= -1.0) & (oa <= na)
            s_lo = torch.maximum(s_lo, torch.where(moving, torch.minimum(s1, s2),
                                                   torch.where(inside, -torch.inf, torch.inf)))
            s_hi = torch.minimum(s_hi, torch.where(moving, torch.maximum(s1, s2),
                                                   torch.where(inside, torch.inf, -torch.inf)))
        da = dp[:, 0]
        hit = s_hi >= s_lo
        s_lo, s_hi = torch.where(hit, s_lo, 0.0), torch.where(hit, s_hi, 0.0)
        a1, a2 = o[:, 0] + s_lo * da, o[:, 0] + s_hi * da
        kmin = torch.clamp(torch.ceil(torch.minimum(a1, a2)), min=0)
        kmax = torch.minimum(torch.floor(torch.maximum(a1, a2)), size[:, 0] - 1)
        kmax = torch.where(hit, kmax, kmin - 1)
        n_planes = int((kmax - kmin + 1).clamp(min=0).max().item()) if kmin.numel() else 0
        n_planes = min(n_planes, self.max_planes)
        k = kmin[:, None] + torch.arange(n_planes, device=d.device, dtype=torch.float64)[None]
        valid = k <= kmax[:, None]
        s = (k - o[:, :1]) / da[:, None]
        fb = o[:, 1:2] + s * dp[:, 1:2]
        fc = o[:, 2:3] + s * dp[:, 2:3]
        ib = torch.minimum(torch.clamp(torch.floor(fb), min=-1), size[:, 1:2] - 1)
        ic = torch.minimum(torch.clamp(torch.floor(fc), min=-1), size[:, 2:3] - 1)
        tb, tc = (fb - ib).to(self.dtype), (fc - ic).to(self.dtype)
        base = ((k.long() + 1) * stride[:, :1] + (ib.long() + 1) * stride[:, 1:2]
                + (ic.long() + 1) * stride[:, 2:3])
        sb, sc = stride[:, 1:2], stride[:, 2:3]
        idx = torch.stack([base, base + sc, base + sb, base + sb + sc], dim=-1)
        wt = (length / da.abs()).to(self.dtype)[:, None, None] * valid.to(self.dtype)[..., None]
        w4 = torch.stack([(1 - tb) * (1 - tc), (1 - tb) * tc, tb * (1 - tc), tb * tc], dim=-1) * wt
        idx = torch.where(valid[..., None], idx, torch.zeros_like(idx))
        return idx, w4

    def ranges(self, max_samples: int):
        step = max(1, max_samples // (4 * max(self.max_planes, 1)))
        for lo in range(0, self.n, step):
            yield lo, min(lo + step, self.n)


class _JosephFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume: torch.Tensor, rays: _Rays, max_samples: int) -> torch.Tensor:  # type: ignore[override]
        pad = torch.nn.functional.pad(volume.detach(), (1, 1, 1, 1, 1, 1)).reshape(-1)
        out = torch.empty(rays.n, dtype=volume.dtype, device=volume.device)
        for lo, hi in rays.ranges(max_samples):
            idx, w4 = rays.chunk(lo, hi)
            out[lo:hi] = (pad[idx] * w4).sum(dim=(1, 2))
        ctx.rays, ctx.max_samples = rays, max_samples
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        rays: _Rays = ctx.rays
        grad_pad = torch.zeros(rays.padded, dtype=grad_out.dtype, device=grad_out.device)
        for lo, hi in rays.ranges(ctx.max_samples):
            idx, w4 = rays.chunk(lo, hi)
            grad_pad.index_add_(0, idx.reshape(-1), (w4 * grad_out[lo:hi, None, None]).reshape(-1))
        nz, ny, nx = rays.shape
        grad = grad_pad.reshape(nz + 2, ny + 2, nx + 2)[1:-1, 1:-1, 1:-1]
        return grad, None, None


def project_rays_torch(volume: torch.Tensor, grid: VolumeGrid, geometry: ConeBeamGeometry, views, rows, cols, *,
                       max_samples: int = 1 << 22) -> torch.Tensor:
    """Line integrals of ``volume[z, y, x]`` along the rays (view, row, col) → ``[B]`` (differentiable).

    For random-ray training; ``max_samples`` bounds the memory of one chunk (samples × 4 neighbours).
    """
    if tuple(volume.shape) != grid.shape:
        raise ValueError(f"volume shape {tuple(volume.shape)} does not match its grid {grid.shape}")
    dev = volume.device
    as_long = lambda a: torch.as_tensor(a).reshape(-1).to(dev).long()  # noqa: E731
    rays = _Rays(grid, geometry, as_long(views), as_long(rows), as_long(cols), dev, volume.dtype)
    return _JosephFunction.apply(volume, rays, max_samples)


def project_torch(volume: torch.Tensor, grid: VolumeGrid, geometry: ConeBeamGeometry, views=None, *,
                  max_samples: int = 1 << 22) -> torch.Tensor:
    """Projections ``[len(views), H, W]`` of ``volume[z, y, x]``; backward = matched back-projection."""
    h, w = geometry.det_shape
    sel = np.arange(geometry.n_views) if views is None else np.asarray(views, dtype=np.int64).reshape(-1)
    vv, rr, cc = np.meshgrid(sel, np.arange(h), np.arange(w), indexing="ij")
    out = project_rays_torch(volume, grid, geometry, vv, rr, cc, max_samples=max_samples)
    return out.reshape(sel.size, h, w)
