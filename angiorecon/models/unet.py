"""U-Net for deep DSA (the anchor's design, Duan et al. 2024, made configurable) and a light CPU variant.

The anchor (``synthetic_dsa.md`` §1.8) uses channels 64…1024 plus an extra 1024 down block (five
down-samplings), two 3×3 convolutions per level with LeakyReLU(0.01), optional norm/dropout, max-pool
or 4×4 stride-2 convolution down, 4×4 transposed convolution or bilinear up, concatenated skips and a
linear 1×1 output. Here every one of those choices is a constructor argument, the norm flag actually
takes effect (the anchor's GAN scripts silently dropped it, §1.9), and inputs of any size are
reflect-padded to a multiple of ``2**depth`` and cropped back, so tiles and whole frames both work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

NORMS = ("none", "batch", "instance", "group")
UP_MODES = ("transpose", "bilinear")
DOWN_MODES = ("maxpool", "conv")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name (``group`` uses up to 8 groups that divide ``channels``)."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = max(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by norm, LeakyReLU and optional Dropout2d."""

    def __init__(self, cin: int, cout: int, norm: str, dropout: float, slope: float) -> None:
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=norm in ("none",)),
                       make_norm(norm, cout), nn.LeakyReLU(slope, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, mode: str, norm: str, dropout: float, slope: float) -> None:
        super().__init__()
        if mode == "maxpool":
            self.pool: nn.Module = nn.MaxPool2d(2)
            cpool = cin
        elif mode == "conv":
            self.pool = nn.Sequential(nn.Conv2d(cin, cin, 4, stride=2, padding=1), nn.LeakyReLU(slope, inplace=True))
            cpool = cin
        else:
            raise ValueError(f"unknown down mode {mode!r}; expected one of {DOWN_MODES}")
        self.block = ConvBlock(cpool, cout, norm, dropout, slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.pool(x))


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, mode: str, norm: str, dropout: float, slope: float) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        elif mode == "bilinear":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cout, 1))
        else:
            raise ValueError(f"unknown up mode {mode!r}; expected one of {UP_MODES}")
        self.block = ConvBlock(cout + cskip, cout, norm, dropout, slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.block(torch.cat([x, skip], dim=1))


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a :class:`UNet` (stored in checkpoints)."""

    in_ch: int = 1
    out_ch: int = 1
    width: int = 64          #: channels of the first level; doubled per level
    depth: int = 5           #: number of down-samplings
    max_width: int = 1024    #: channel cap (the anchor's extra down block stays at 1024)
    up_mode: str = "transpose"
    down_mode: str = "maxpool"
    norm: str = "none"
    dropout: float = 0.0
    slope: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ANCHOR = UNetConfig()  #: Duan et al.'s U-Net: 64…1024 channels, 5 down-samplings (≈103 M parameters here)
#: CPU inference variant: 4 levels of 16…128 channels, bilinear up (no checkerboard), group norm.
LIGHT = UNetConfig(width=16, depth=3, max_width=128, up_mode="bilinear", norm="group")


class UNet(nn.Module):
    """Image-to-image U-Net; ``forward`` accepts any H×W (padded to a multiple of ``2**depth``)."""

    def __init__(self, config: UNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or UNetConfig()
        if overrides:
            cfg = UNetConfig(**{**cfg.to_dict(), **overrides})
        if cfg.norm not in NORMS:
            raise ValueError(f"unknown norm {cfg.norm!r}; expected one of {NORMS}")
        if cfg.depth < 1 or cfg.width < 1:
            raise ValueError("depth and width must be >= 1")
        self.config = cfg
        chs = [min(cfg.width * 2 ** i, cfg.max_width) for i in range(cfg.depth + 1)]
        self.inc = ConvBlock(cfg.in_ch, chs[0], cfg.norm, cfg.dropout, cfg.slope)
        self.downs = nn.ModuleList(
            Down(chs[i], chs[i + 1], cfg.down_mode, cfg.norm, cfg.dropout, cfg.slope) for i in range(cfg.depth))
        self.ups = nn.ModuleList(
            Up(chs[i + 1], chs[i], chs[i], cfg.up_mode, cfg.norm, cfg.dropout, cfg.slope)
            for i in reversed(range(cfg.depth)))
        self.outc = nn.Conv2d(chs[0], cfg.out_ch, 1)
        init_weights(self)

    @property
    def multiple(self) -> int:
        return 2 ** self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.outc(y)[..., :h, :w]


def init_weights(module: nn.Module, kind: str = "kaiming") -> None:
    """Kaiming-normal (the anchor's default) or xavier init of convolutions; zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0.01, nonlinearity="leaky_relu")
            elif kind == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                raise ValueError(f"unknown init {kind!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_unet(arch: str | dict[str, Any] = "light", **overrides: Any) -> UNet:
    """``"anchor"``/``"light"`` preset or a config dict (as stored in a checkpoint), plus overrides."""
    if isinstance(arch, dict):
        return UNet(UNetConfig(**arch), **overrides)
    presets = {"anchor": ANCHOR, "light": LIGHT}
    if arch not in presets:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(presets)}")
    return UNet(presets[arch], **overrides)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
