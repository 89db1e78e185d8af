"""Hash-grid encoding: exact trilinear interpolation on dense levels, level masking, gradients."""

from __future__ import annotations

import torch

from angiorecon.models.hashgrid import HashGrid, HashGridConfig


def test_dense_level_is_trilinear_interpolation():
    grid = HashGrid(HashGridConfig(3, 1, 1, 12, 4, 1.0))    # one dense level, resolution 4 (5³ nodes)
    with torch.no_grad():
        grid.embeddings.copy_(torch.arange(125, dtype=torch.float32)[:, None])  # value = i + 5 j + 25 k
    x = torch.tensor([[0.1, 0.55, 0.9], [1.0, 0.0, 0.3]])
    expected = (x * 4) @ torch.tensor([1.0, 5.0, 25.0])      # linear function → exact
    torch.testing.assert_close(grid(x)[:, 0], expected, rtol=1e-5, atol=1e-4)


def test_levels_hashing_masking_and_gradients():
    cfg = HashGridConfig(4, 6, 2, 10, 2, 1.6)
    grid = HashGrid(cfg)
    assert not all(bool(d) for d in grid._is_dense)           # fine levels are hashed
    x = torch.rand(64, 4)
    out = grid(x)
    assert out.shape == (64, 12)
    grid.active_levels = 2
    masked = grid(x)
    assert torch.all(masked[:, 4:] == 0) and torch.equal(masked[:, :4], out[:, :4])
    masked.sum().backward()
    assert grid.embeddings.grad.abs().sum() > 0
