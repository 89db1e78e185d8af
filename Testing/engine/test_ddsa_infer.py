"""Deep-DSA inference: tiling, the ``ddsa`` CLI on PNG and NIfTI, bad inputs, the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from angiorecon.ddsa.domain import DOMAIN
from angiorecon.ddsa.infer import DeepDSA, read_frames, shipped_model_path
from angiorecon.ddsa.train import TrainConfig, Trainer, export_weights, pearson
from angiorecon.formats.volume import write_stack
from angiorecon.geometry import VolumeGrid
from angiorecon.models.unet import UNet
from conftest import json_events, run_engine
from ddsa_tubes import tube_source


class _Identity(UNet):
    """A U-Net-shaped stand-in whose output equals its input, to test tiling and blending exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(steps=2, arch_overrides={"width": 4, "depth": 2}, patch=32, batch=2),
                      tube_source(40))
    trainer.fit()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return export_weights(trainer.state_dict(), path)


def test_tiled_inference_blends_seamlessly():
    net = DeepDSA(_Identity(width=2, depth=1), DOMAIN, tile=32, overlap=8, batch=3)
    x = np.random.default_rng(0).standard_normal((2, 70, 45)).astype(np.float32)
    np.testing.assert_allclose(net.predict_normalised(x), x, atol=1e-5)  # weights sum to one everywhere
    small = x[:, :30, :30]
    np.testing.assert_array_equal(net.predict_normalised(small), small)  # no tiling below the tile size


def test_cli_on_png_and_nifti_writes_outputs_and_manifest(tmp_path, tiny_model):
    src = tube_source(64)
    fill, _ = src(np.random.default_rng(0))
    png = tmp_path / "frame.png"
    display = (255 * np.exp(-(fill - fill.min()) / 4)).astype(np.uint8)  # vessels dark
    Image.fromarray(display).save(png)
    nii = tmp_path / "run.nii.gz"
    write_stack(nii, np.stack([src(np.random.default_rng(i))[0] for i in range(3)]), (0.3, 0.3))
    out = tmp_path / "out"
    res = run_engine("ddsa", png, nii, "--model", tiny_model, "--out", out, "--device", "cpu",
                     "--tile", "32", "--overlap", "8", "--events", "json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json_events(res.stdout)[-1]["event"] == "result"
    manifest = json.loads((out / "manifest.json").read_text())
    roles = sorted(o["role"] for o in manifest["outputs"])
    assert roles == ["images", "preview", "preview", "sequence"]
    out_png = np.asarray(Image.open(out / "ddsa" / "frame_ddsa.png"))
    assert out_png.shape == (64, 64) and out_png.dtype == np.uint8
    stack = read_frames(out / "ddsa" / "run_ddsa.nii.gz")
    assert stack.p.shape == (3, 64, 64) and stack.spacing == pytest.approx((0.3, 0.3))
    assert np.asarray(Image.open(out / "preview" / "frame.png")).shape == (64, 132)
    assert manifest["ddsa"]["domain"]["name"] == DOMAIN["name"]
    assert [i["frames"] for i in manifest["ddsa"]["inputs"]] == [1, 3]


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_model):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    res = run_engine("ddsa", broken, "--model", tiny_model, "--out", tmp_path / "o1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error (bad-input): cannot read image")

    good = tmp_path / "ok.png"
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(good)
    wrong = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, wrong)
    res = run_engine("ddsa", good, "--model", wrong, "--out", tmp_path / "o2")
    assert res.returncode == 2
    assert "is not an angiorecon deep-DSA checkpoint" in res.stderr.strip().splitlines()[-1]
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage")
    res = run_engine("ddsa", good, "--model", tmp_path / "garbage.pt", "--out", tmp_path / "o3")
    assert res.returncode == 2 and "cannot read model file" in res.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def phantom_ct() -> tuple[np.ndarray, VolumeGrid]:
    """A 3 mm torso-like HU phantom (body, lungs, spine) — a CT the shipped model never saw."""
    z, y, x = np.mgrid[:48, :64, :64].astype(np.float32)
    hu = np.full(z.shape, -1000.0, np.float32)
    body = ((x - 31.5) / 29) ** 2 + ((y - 31.5) / 21) ** 2 < 1
    hu[body] = 40.0
    lungs = (((x - 19) / 8) ** 2 + ((y - 29) / 11) ** 2 < 1) | (((x - 44) / 8) ** 2 + ((y - 29) / 11) ** 2 < 1)
    hu[lungs & body] = -820.0
    hu[((x - 31.5) / 4.5) ** 2 + ((y - 47) / 4.5) ** 2 < 1] = 800.0
    return hu, VolumeGrid.centered((64, 64, 48), (3.0, 3.0, 3.0))


@pytest.mark.skipif(not shipped_model_path().is_file(), reason="no deep-DSA model shipped in this checkout")
def test_shipped_model_output_correlates_with_simulated_dsa():
    """Coronary views over a torso the model never saw: DDSA of the fill alone tracks the true iodine."""
    from angiorecon.simulation import physics
    from angiorecon.simulation.products import CoronaryConfig, simulate_coronary

    torch.set_num_threads(1)
    net = DeepDSA.load(device="cpu")
    assert net.domain == DOMAIN and net.meta["step"] > 0
    hu, grid = phantom_ct()
    views = simulate_coronary(hu, grid, config=CoronaryConfig(views=3, detector=(192, 192), pixel_spacing=(0.6, 0.6)),
                              seed=5)
    fill = physics.counts_to_line_integral(views.counts, views.config.i0)
    rs = [pearson(net.predict(f), d) for f, d in zip(fill, views.iodine)]
    assert np.median(rs) > 0.85, rs  # 0.93–0.95 measured for the shipped model
