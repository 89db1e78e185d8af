"""Differentiable image losses used by the learned reconstruction methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5,
         data_range: float | torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of two images (H, W) or batches (B, 1, H, W) with a Gaussian window (as 3DGS/4DRGS).

    ``data_range`` defaults to the dynamic range of ``b`` (the measurement), so the loss does not
    depend on the arbitrary global scale of line integrals.
    """
    if a.dim() == 2:
        a, b = a[None, None], b[None, None]
    if data_range is None:
        data_range = (b.max() - b.min()).detach().clamp_min(1e-8)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    win = _gaussian_window(window, sigma, a.device, a.dtype)
    pad = window // 2
    mu_a = F.conv2d(a, win, padding=pad)
    mu_b = F.conv2d(b, win, padding=pad)
    saa = F.conv2d(a * a, win, padding=pad) - mu_a ** 2
    sbb = F.conv2d(b * b, win, padding=pad) - mu_b ** 2
    sab = F.conv2d(a * b, win, padding=pad) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.mean()
