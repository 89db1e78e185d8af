"""Deep-DSA building blocks: U-Net variants, WGAN-GP critic, augmentation rules, Frangi baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
import torch

from angiorecon.ddsa.data import NO_AUGMENT, Augment, PairDataset, augment_pair, collimate
from angiorecon.ddsa.domain import TARGET_GAIN, frame_stats, intensity_to_line_integral
from angiorecon.ddsa.frangi import frangi
from angiorecon.models.critic import Critic, gradient_penalty
from angiorecon.models.unet import ANCHOR, LIGHT, UNet, build_unet, count_parameters
from ddsa_tubes import tube_source


@pytest.mark.parametrize("kw", [
    dict(up_mode="transpose", down_mode="maxpool", norm="none"),
    dict(up_mode="bilinear", down_mode="conv", norm="batch", dropout=0.1),
    dict(up_mode="transpose", down_mode="conv", norm="instance"),
    dict(up_mode="bilinear", down_mode="maxpool", norm="group"),
])
def test_unet_modes_keep_any_frame_size(kw):
    net = UNet(width=4, depth=3, **kw)
    for shape in [(2, 1, 32, 32), (1, 1, 37, 50)]:
        assert net(torch.randn(shape)).shape == shape


def test_anchor_and_light_presets():
    assert (ANCHOR.width, ANCHOR.depth, ANCHOR.max_width) == (64, 5, 1024)
    # the anchor's five levels with narrow channels: same topology, cheap to build
    narrow = build_unet("anchor", width=2, max_width=32)
    assert len(narrow.downs) == 5 and narrow(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    light = build_unet("light")
    assert light.config == LIGHT and count_parameters(light) < 1_000_000  # < 4 MB of float32 weights
    with pytest.raises(ValueError):
        build_unet("light", norm="layer")


def test_critic_scores_pairs_and_penalty_has_gradients():
    critic = Critic(in_ch=2, width=4, depth=3)
    cond, real, fake = (torch.randn(3, 1, 32, 32) for _ in range(3))
    assert critic(cond, real).shape == (3,)
    gp = gradient_penalty(critic, cond, real, fake, weight=10.0)
    assert gp.item() >= 0
    gp.backward()
    weights = [m.weight for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)  # GP reaches every layer
    with pytest.raises(ValueError):
        Critic(norm="batch")


def _only_geometry() -> Augment:
    return Augment(p_affine=1.0, p_transmission_lut=0.0, gamma=(1.0, 1.0), p_noise=0.0, p_blur=0.0, p_lowfreq=0.0,
                   p_collimate=0.0, p_display8=0.0)


def test_geometric_augmentation_is_identical_on_input_and_target():
    """fill = dsa + constant: after any geometric transform x·s + centre − c must equal y·s."""
    size = 64
    src_dsa = tube_source(size)(np.random.default_rng(0))[1]
    fill = src_dsa + 3.0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x, y = augment_pair(rng, fill, src_dsa, 32, _only_geometry())
        centre, scale = frame_stats(fill)
        np.testing.assert_allclose(x * scale + centre - 3.0, y * scale / TARGET_GAIN, atol=1e-4)


def test_photometric_augmentation_touches_input_only():
    src = tube_source(64)
    fill, dsa = src(np.random.default_rng(1))
    heavy = Augment(p_noise=1.0, noise=(0.05, 0.05), p_blur=1.0, p_lowfreq=1.0, lowfreq=(0.2, 0.2))
    light = Augment(p_noise=0.0, p_blur=0.0, p_lowfreq=0.0)
    xh, yh = augment_pair(np.random.default_rng(7), fill, dsa, 48, heavy)
    xl, yl = augment_pair(np.random.default_rng(7), fill, dsa, 48, light)
    np.testing.assert_array_equal(yh, yl)          # the target is the same sharp, noise-free image
    assert np.abs(xh - xl).mean() > 0.01           # while the input was degraded
    x0, y0 = augment_pair(np.random.default_rng(3), fill, np.zeros_like(dsa), 48, heavy)
    assert np.all(y0 == 0) and x0.std() > 0        # no vessels → zero target, whatever the input noise


def test_collimation_blocks_beam_and_iodine_outside_the_field():
    """fill' = w·fill + (1−w)·p_out and dsa' = w·dsa with one shutter transmission w per pixel: the
    mask (fill − dsa) is shuttered identically, so the pair stays a physical fill/iodine pair."""
    fill, dsa = tube_source(64, n_tubes=6)(np.random.default_rng(2))
    shuttered = 0
    for seed in range(6):
        fc, dc = collimate(np.random.default_rng(seed), fill, dsa)
        on = dsa > 0.1
        w = dc[on] / dsa[on]
        assert np.all((w >= 0) & (w <= 1 + 1e-9))
        part = w < 0.99
        if part.any():
            p_out = (fc[on][part] - w[part] * fill[on][part]) / (1 - w[part])
            assert np.ptp(p_out) < 1e-3 * abs(p_out.mean())       # one blocked-beam level
            assert p_out.mean() > np.percentile(fill, 99)           # darker than any anatomy
            shuttered += int((w < 0.01).sum())
    assert shuttered > 0


def test_8bit_display_quantises_the_input_and_keeps_the_target_exact():
    fill, dsa = tube_source(64)(np.random.default_rng(4))
    aug = Augment(iodine=(1.0, 1.0), flip=False, rot90=False, p_affine=0.0, p_transmission_lut=0.0,
                  gamma=(1.0, 1.0), p_noise=0.0, p_blur=0.0, p_lowfreq=0.0, p_collimate=0.0, p_display8=1.0)
    x, y = augment_pair(np.random.default_rng(0), fill, dsa, 64, aug)
    _, y_other = augment_pair(np.random.default_rng(0), fill, dsa, 64, Augment(**{**aug.to_dict(), "p_noise": 1.0}))
    np.testing.assert_array_equal(y, y_other)  # input noise never reaches the target
    levels = np.unique(np.round(x, 5))
    assert 8 < len(levels) <= 256               # an 8-bit display has at most 256 grey levels
    # the target is f(fill) − f(fill − dsa) through the exact (unquantised) LUT: zero off the tubes,
    # positive on them except where the display saturates
    # positive on them except where the display saturates (3×3 tolerance: the crop's half-pixel centre)
    near = ndimage.maximum_filter(dsa, 3)
    assert np.all(y[near == 0] == 0) and y.min() >= 0
    assert (y[ndimage.minimum_filter(dsa, 3) > 0.05] > 0).mean() > 0.9


def test_dataset_items_depend_only_on_index():
    ds = PairDataset(tube_source(48), patch=32, seed=5)
    a, b = ds[11], ds[11]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ds[12][0], a[0])
    assert a[0].shape == (1, 32, 32) and a[0].dtype == torch.float32
    x, y = PairDataset(tube_source(48), patch=48, augment=NO_AUGMENT)[0]
    assert float(y.min()) >= 0


def test_display_mapping_dark_is_more_attenuation():
    v = np.array([0, 127, 255], np.uint8)
    p = intensity_to_line_integral(v, 255)
    assert p[0] > p[1] > p[2] >= 0
    ends = np.array([0, 255], np.uint8)
    np.testing.assert_allclose(intensity_to_line_integral(ends, 255, invert=True),
                               intensity_to_line_integral(ends, 255)[::-1])


def test_frangi_finds_dark_tubes():
    size = 96
    yy, xx = np.mgrid[:size, :size]
    vessel = (np.abs(yy - 0.5 * xx - 20) < 2.5) | (np.abs(xx - 70) < 1.5)
    rng = np.random.default_rng(0)
    image = 200.0 - 80.0 * vessel + 3 * rng.standard_normal((size, size))
    v = frangi(image)
    assert v.shape == image.shape and 0 <= v.min() and v.max() <= 1
    assert v[vessel].mean() > 5 * v[~vessel].mean()
    assert frangi(image, black_ridges=False)[vessel].mean() < v[vessel].mean() / 5
