"""4DRGS Gaussian renderer and voxeliser vs ray-marched / closed-form integrals, with gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from angiorecon.geometry import ConeBeamGeometry, VolumeGrid
from angiorecon.models.gaussians import (ViewTensors, covariance_inverse, render_gaussians,
                                         voxelize_gaussians)


def _geometry() -> ConeBeamGeometry:
    return ConeBeamGeometry.circular([0.4, 1.9], dso=600, dsd=1000, det_shape=(48, 64), det_spacing=1.0)


def _ray_marched(means, scales, quats, rho, geom, view, step=0.05):
    """Brute-force line integrals by dense sampling along every pixel ray (float64)."""
    _, inv = covariance_inverse(scales, quats)
    src = torch.as_tensor(geom.source[view])
    pix = torch.as_tensor(geom.pixel_centers(view)).reshape(-1, 3)
    d = pix - src
    length = d.norm(dim=1, keepdim=True)
    d = d / length
    dist = (means[0] - src).norm()
    t = torch.arange(float(dist) - 60, float(dist) + 60, step, dtype=torch.float64)
    out = torch.zeros(pix.shape[0], dtype=torch.float64)
    for g in range(means.shape[0]):
        x = src[None, None] + t[None, :, None] * d[:, None, :] - means[g]
        q = torch.einsum("rti,ij,rtj->rt", x, inv[g], x)
        out += rho[g] * torch.exp(-0.5 * q).sum(1) * step
    return out.reshape(geom.det_shape)


@pytest.mark.parametrize("mode,tol", [("exact", 1e-3), ("ewa", 0.02)])
def test_single_gaussian_matches_ray_marching(mode, tol):
    geom = _geometry()
    views = ViewTensors(geom, "cpu", torch.float64)
    means = torch.tensor([[5.0, -3.0, 4.0]], dtype=torch.float64)
    scales = torch.tensor([[4.0, 2.0, 2.5]], dtype=torch.float64)   # moderate anisotropy (2:1)
    quats = torch.tensor([[0.9, 0.2, -0.3, 0.1]], dtype=torch.float64)
    rho = torch.tensor([0.7], dtype=torch.float64)
    for view in range(geom.n_views):
        img = render_gaussians(means, scales, quats, rho, views, view, mode=mode)
        ref = _ray_marched(means, scales, quats, rho, geom, view)
        rel = (img - ref).norm() / ref.norm()
        assert rel < tol, (mode, view, float(rel))


def test_render_gradients_gradcheck():
    geom = ConeBeamGeometry.circular([0.3], dso=300, dsd=500, det_shape=(12, 12), det_spacing=2.0)
    views = ViewTensors(geom, "cpu", torch.float64)
    means = torch.tensor([[1.0, 0.5, -1.0], [-2.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    scales = torch.tensor([[3.0, 2.0, 2.5], [2.0, 2.5, 3.0]], dtype=torch.float64, requires_grad=True)
    quats = torch.tensor([[1.0, 0.1, 0.0, 0.2], [0.9, 0.0, 0.3, 0.0]], dtype=torch.float64, requires_grad=True)
    rho = torch.tensor([0.5, 0.8], dtype=torch.float64, requires_grad=True)
    for mode in ("exact", "ewa"):
        assert torch.autograd.gradcheck(
            lambda m, s, q, r: render_gaussians(m, s, q, r, views, 0, mode=mode), (means, scales, quats, rho),
            eps=1e-6, atol=1e-5)


def test_voxelizer_matches_closed_form_and_mass():
    grid = VolumeGrid.centered((40, 40, 40), 1.0)
    means = torch.tensor([[1.3, -2.2, 0.7]], dtype=torch.float64)
    scales = torch.tensor([[3.0, 2.0, 4.0]], dtype=torch.float64)
    quats = torch.tensor([[0.8, 0.3, 0.1, -0.2]], dtype=torch.float64)
    rho = torch.tensor([2.0], dtype=torch.float64)
    vol = voxelize_gaussians(means, scales, quats, rho, grid).numpy()
    mass = rho.item() * (2 * math.pi) ** 1.5 * float(scales.prod())
    assert abs(vol.sum() - mass) / mass < 0.01
    _, inv = covariance_inverse(scales, quats)
    x = torch.as_tensor(grid.voxel_centers()[20, 18, 23]) - means[0]
    expect = rho.item() * math.exp(-0.5 * float(x @ inv[0] @ x))
    np.testing.assert_allclose(vol[20, 18, 23], expect, rtol=1e-9)


@pytest.mark.parametrize("mode", ["exact", "ewa"])
def test_float32_render_matches_float64_for_small_distant_gaussians(mode):
    """Training runs in float32: a 0.5-1 mm Gaussian 750 mm from the source must not lose its
    footprint to cancellation (the source-centred exponent mᵀAm - b²/a was off by 3.5 %)."""
    geom = ConeBeamGeometry.circular([0.4, 1.9], dso=750, dsd=1200, det_shape=(64, 64), det_spacing=1.0)
    imgs = []
    for dt in (torch.float64, torch.float32):
        views = ViewTensors(geom, "cpu", dt)
        args = [torch.tensor(a, dtype=dt)
                for a in ([[5.0, -3.0, 4.0]], [[1.0, 0.5, 0.6]], [[0.9, 0.2, -0.3, 0.1]], [0.7])]
        imgs.append(render_gaussians(*args, views, 1, mode=mode).double())
    assert float((imgs[1] - imgs[0]).norm() / imgs[0].norm()) < 1e-4


def test_voxelizer_many_densities_equals_one_at_a_time():
    grid = VolumeGrid.centered((20, 18, 16), 1.5)
    g = torch.Generator().manual_seed(0)
    means = (torch.rand(30, 3, generator=g, dtype=torch.float64) - 0.5) * 20
    scales = 0.5 + 2 * torch.rand(30, 3, generator=g, dtype=torch.float64)
    quats = torch.randn(30, 4, generator=g, dtype=torch.float64)
    rho = torch.rand(30, 3, generator=g, dtype=torch.float64)
    many = voxelize_gaussians(means, scales, quats, rho, grid)
    assert many.shape == (3, *grid.shape)
    for t in range(3):
        torch.testing.assert_close(many[t], voxelize_gaussians(means, scales, quats, rho[:, t], grid))
