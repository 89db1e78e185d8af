"""Multiresolution hash-grid encoding (Müller et al. 2022) in plain PyTorch.

The anchors (VPAL, 4DRGS) use tiny-cuda-nn's ``HashGrid``; inside Slicer nothing can be compiled,
so this is a pure-torch implementation that runs on CPU and CUDA tensors. When ``tinycudann`` is
importable and the tensors live on CUDA, :class:`HashGrid` delegates to it (same hyper-parameters);
it never requires it.

Coarse-to-fine training (VPAL §3.3) is supported by :attr:`HashGrid.active_levels`: features of
levels ``>= active_levels`` are zeroed, exactly like the anchor's level masking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Spatial-hash primes from the Instant-NGP paper (first prime 1 keeps coherence along x).
_PRIMES = (1, 2654435761, 805459861, 3674653429)


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of one hash-grid encoding (names as in tiny-cuda-nn)."""

    n_dims: int = 3
    n_levels: int = 12
    n_features: int = 8
    log2_table_size: int = 19
    base_resolution: int = 8
    per_level_scale: float = 1.45

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features

    def resolutions(self) -> list[int]:
        return [int(math.floor(self.base_resolution * self.per_level_scale ** l)) for l in range(self.n_levels)]


class HashGrid(nn.Module):
    """Encode points in ``[0, 1]^d`` into ``n_levels × n_features`` interpolated features."""

    def __init__(self, cfg: HashGridConfig, *, init_scale: float = 1e-4, use_tcnn: bool = True) -> None:
        super().__init__()
        if cfg.n_dims not in (3, 4):
            raise ValueError("HashGrid supports 3D (x, y, z) and 4D (x, y, z, t) inputs")
        self.cfg = cfg
        self.active_levels = cfg.n_levels
        table = 2 ** cfg.log2_table_size
        sizes = []
        for res in cfg.resolutions():
            dense = (res + 1) ** cfg.n_dims
            sizes.append(min(dense, table))
        self.level_sizes = sizes
        self.register_buffer("_offsets", torch.tensor([0] + list(torch.tensor(sizes).cumsum(0)), dtype=torch.long),
                             persistent=False)
        self.embeddings = nn.Parameter(torch.empty(sum(sizes), cfg.n_features).uniform_(-init_scale, init_scale))
        corners = torch.tensor([[(c >> d) & 1 for d in range(cfg.n_dims)] for c in range(2 ** cfg.n_dims)])
        self.register_buffer("_corners", corners, persistent=False)
        self.register_buffer("_primes", torch.tensor(_PRIMES[: cfg.n_dims], dtype=torch.long), persistent=False)
        res = cfg.resolutions()
        self.register_buffer("_res", torch.tensor(res, dtype=torch.long), persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("_is_dense", torch.tensor([(r + 1) ** cfg.n_dims <= n for r, n in zip(res, sizes)]),
                             persistent=False)
        self.register_buffer("_strides", torch.tensor([[(r + 1) ** d for d in range(cfg.n_dims)] for r in res],
                                                      dtype=torch.long), persistent=False)
        self._tcnn = _make_tcnn(cfg) if use_tcnn else None

    @property
    def out_dim(self) -> int:
        return self.cfg.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, d) in [0, 1] → (B, n_levels·n_features); all levels in one gather."""
        if self._tcnn is not None and x.is_cuda:
            return self._tcnn_forward(x)
        cfg = self.cfg
        pos = x.clamp(0.0, 1.0)[:, None, :] * self._res[None, :, None]                 # (B, L, d)
        base = torch.minimum(pos.floor().long(), (self._res - 1)[None, :, None])
        frac = pos - base
        corner = base[:, :, None, :] + self._corners[None, None]                      # (B, L, 2^d, d)
        dense = (corner * self._strides[None, :, None, :]).sum(-1)
        hashed = corner * self._primes
        h = hashed[..., 0]
        for d in range(1, cfg.n_dims):
            h = h ^ hashed[..., d]
        idx = torch.where(self._is_dense[None, :, None], dense, h % self._sizes[None, :, None])
        emb = self.embeddings[idx + self._offsets[None, :-1, None]]                   # (B, L, 2^d, F)
        w = torch.where(self._corners.bool()[None, None], frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)
        feats = (w[..., None] * emb).sum(2)                                            # (B, L, F)
        if self.active_levels < cfg.n_levels:
            feats = feats * (torch.arange(cfg.n_levels, device=x.device) < self.active_levels)[None, :, None]
        return feats.reshape(x.shape[0], cfg.out_dim)

    def _tcnn_forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - needs CUDA + tcnn
        out = self._tcnn(x.contiguous()).float()
        if self.active_levels < self.cfg.n_levels:
            keep = self.active_levels * self.cfg.n_features
            out = torch.cat([out[:, :keep], out.new_zeros(out.shape[0], out.shape[1] - keep)], dim=-1)
        return out


def _make_tcnn(cfg: HashGridConfig) -> nn.Module | None:
    """tiny-cuda-nn encoding with the same settings, or None when unavailable (the usual case)."""
    if not torch.cuda.is_available():
        return None
    try:  # pragma: no cover - optional accelerator
        import tinycudann as tcnn
    except ImportError:
        return None
    return tcnn.Encoding(cfg.n_dims, {  # pragma: no cover
        "otype": "HashGrid", "n_levels": cfg.n_levels, "n_features_per_level": cfg.n_features,
        "log2_hashmap_size": cfg.log2_table_size, "base_resolution": cfg.base_resolution,
        "per_level_scale": cfg.per_level_scale})


class MLP(nn.Module):
    """Small fully connected network (the anchors' FullyFusedMLP, in plain torch)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, layers: int = 2,
                 out_activation: str = "none") -> None:
        super().__init__()
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            d = hidden
        mods.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*mods)
        self.out_activation = out_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.out_activation == "relu":
            return torch.relu(y)
        if self.out_activation == "sigmoid":
            return torch.sigmoid(y)
        if self.out_activation == "softplus":
            return nn.functional.softplus(y)
        return y
