"""Conditional WGAN-GP critic for deep DSA (anchor: ``UnetGAN.Critic``, ``synthetic_dsa.md`` §1.9).

The critic scores an (input, DSA) pair: [fill image, real or generated DSA] → one scalar per sample.
Like the anchor it is a stack of 4×4 stride-2 convolutions with LeakyReLU(0.2), then a 3×3 and a 1×1
convolution; unlike it, the score is the spatial mean of the last map instead of a linear layer over a
fixed 12×12 map, so any patch size works, and the default norm is a per-sample layer norm
(GroupNorm with one group) because the gradient penalty is defined per sample and must not be mixed
across the batch (no batch norm in a WGAN-GP critic).
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import init_weights, make_norm


class Critic(nn.Module):
    """Patch critic over ``in_ch`` stacked channels (default 2: condition + DSA)."""

    def __init__(self, in_ch: int = 2, width: int = 32, depth: int = 5, max_width: int = 512,
                 norm: str = "layer") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_ch
        for i in range(depth):
            cout = min(width * 2 ** i, max_width)
            layers += [nn.Conv2d(c, cout, 4, stride=2, padding=1), self._norm(norm, cout, first=i == 0),
                       nn.LeakyReLU(0.2, inplace=True)]
            c = cout
        layers += [nn.Conv2d(c, c, 3, padding=1), self._norm(norm, c, first=False), nn.LeakyReLU(0.2, inplace=True),
                   nn.Conv2d(c, 1, 1)]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    @staticmethod
    def _norm(kind: str, channels: int, first: bool) -> nn.Module:
        if first or kind == "none":
            return nn.Identity()
        if kind == "layer":
            return nn.GroupNorm(1, channels)
        if kind == "batch":
            raise ValueError("batch norm breaks the per-sample gradient penalty; use layer, instance or none")
        return make_norm(kind, channels)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], dim=1)).mean(dim=(1, 2, 3))


def gradient_penalty(critic: Critic, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     weight: float = 10.0) -> torch.Tensor:
    """WGAN-GP term λ·E[(‖∇ D(x, ŷ)‖₂ − 1)²] on random interpolates ŷ between real and fake DSA.

    The gradient is taken with respect to the DSA channel only (the condition is fixed), per sample.
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mix = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(condition.detach(), mix)
    (grad,) = torch.autograd.grad(score.sum(), mix, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - 1) ** 2).mean()
