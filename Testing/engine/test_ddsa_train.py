"""Deep-DSA training: loss goes down, checkpoints resume exactly, WGAN-GP steps, DDP over 2 gloo ranks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from scipy import ndimage
import torch

from angiorecon.ddsa.data import full_frame_pairs
from angiorecon.ddsa.train import TrainConfig, Trainer, export_weights, load_checkpoint
from ddsa_tubes import tube_source

REPO = Path(__file__).resolve().parents[2]
TINY = dict(arch_overrides={"width": 6, "depth": 2}, patch=32, batch=4, warmup=0)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_few_cpu_steps_reduce_the_loss():
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(steps=40, lr=3e-3, augment={"iodine": (1.0, 1.0)}, **TINY), tube_source(48))
    val = full_frame_pairs(tube_source(48), 4, seed=9)
    before = trainer.validate(val)["val_l1"]
    losses = [r["loss"] for r in trainer.fit()]
    after = trainer.validate(val)["val_l1"]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert after < before


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    torch.set_num_threads(1)
    cfg = dict(steps=5, lr=2e-3, seed=3, **TINY)
    straight = Trainer(TrainConfig(**cfg), tube_source(40))
    straight.fit()

    first = Trainer(TrainConfig(**cfg), tube_source(40))
    first.fit(steps=3)
    first.save(tmp_path / "ckpt.pt")
    resumed = Trainer(TrainConfig(**cfg), tube_source(40))
    resumed.resume(tmp_path / "ckpt.pt")
    assert resumed.step == 3
    assert torch.equal(_flat(resumed.model), _flat(first.model))
    a, b = first.opt.state_dict(), resumed.opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for k in a["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][k][name], b["state"][k][name])
    assert resumed.sched.state_dict() == first.sched.state_dict()
    resumed.fit()  # the remaining 2 steps draw the same samples as the uninterrupted run
    assert resumed.step == 5
    torch.testing.assert_close(_flat(resumed.model), _flat(straight.model), rtol=0, atol=1e-6)

    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert state["domain"]["name"].startswith("line-integral") and state["config"]["seed"] == 3
    export_weights(state, tmp_path / "w.pt", note="test")
    assert load_checkpoint(tmp_path / "w.pt")["meta"] == {"note": "test"}


def test_wgan_gp_steps_critic_n_times_per_generator_step():
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=2, gan=True, n_critic=3, critic_width=4, critic_depth=3, **TINY)
    trainer = Trainer(cfg, tube_source(40))
    c0 = _flat(trainer.critic).clone()
    recs = trainer.fit()
    assert all(np.isfinite([r["loss"], r["gp"], r["w_distance"], r["adv"]]).all() for r in recs)
    state = trainer.opt_c.state_dict()["state"]
    assert all(int(s["step"]) == 2 * 3 for s in state.values())  # 3 critic updates per generator step
    assert not torch.equal(c0, _flat(trainer.critic))
    assert all(p.requires_grad is False for p in trainer.critic.parameters())  # frozen for G's step


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path[:0] = [{testing!r}, {repo!r}]
    from angiorecon.ddsa.train import TrainConfig, Trainer, init_distributed
    from ddsa_tubes import tube_source
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    assert info.world == 2 and torch.distributed.get_backend() == "gloo"
    cfg = TrainConfig(steps=2, arch_overrides={{"width": 4, "depth": 2}}, patch=32, batch=2, warmup=0, seed=1)
    trainer = Trainer(cfg, tube_source(40), device="cpu", dist_info=info)
    init = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    trainer.fit()
    final = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save({{"init": init, "final": final}}, os.path.join({out!r}, f"rank{{info.rank}}.pt"))
    trainer.save(os.path.join({out!r}, "ckpt.pt"))
    torch.distributed.destroy_process_group()
""")


def test_ddp_two_gloo_ranks_keep_identical_parameters(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(testing=str(REPO / "Testing" / "engine"), repo=str(REPO), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", str(script)],
                         capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["init"], r1["init"])
    assert not torch.equal(r0["init"], r0["final"])      # a step happened
    assert torch.equal(r0["final"], r1["final"])         # and gradients were averaged across ranks
    assert load_checkpoint(tmp_path / "ckpt.pt")["step"] == 2   # written by rank 0 only


def test_ddsa_train_cli_under_torchrun_writes_only_from_rank0(tmp_path):
    """The real task end to end: simulator pairs from two small CTs, 2 gloo ranks, 2 steps."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_ddsa_infer import phantom_ct
    from angiorecon.formats.volume import write_volume

    hu, grid = phantom_ct()
    write_volume(tmp_path / "train_ct.nii.gz", hu, grid)
    write_volume(tmp_path / "val_ct.nii.gz", np.where(hu > 500, 1200.0, hu).astype(np.float32), grid)
    out = tmp_path / "run"
    scratch = tmp_path / "tmp"      # the ranks' TMPDIR: rank 1's private worker folder must be gone after
    scratch.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29534", "-m", "angiorecon", "ddsa-train", "--out", str(out),
                          "--device", "cpu", "--steps", "2", "--batch", "2", "--patch", "32", "--width", "4",
                          "--depth", "2", "--pool", "2", "--val-frames", "1", "--val-every", "1",
                          "--detector", "64", "--train-ct", str(tmp_path / "train_ct.nii.gz"),
                          "--val-ct", str(tmp_path / "val_ct.nii.gz"), "--events", "quiet"],
                         capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.pt", "ddsa_weights.pt", "history.json", "last.pt", "manifest.json"]
    weights = load_checkpoint(out / "ddsa_weights.pt")
    assert weights["step"] >= 1 and weights["meta"]["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp", "train_ct.nii.gz", "val_ct.nii.gz"]
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("angiorecon-")]


def test_coronary_pairs_are_consistent_fill_and_iodine():
    from angiorecon.ddsa.sources import coronary_pairs

    pairs = coronary_pairs(None, 3, seed=1, detector=(128, 128), views_per_tree=2)
    assert len(pairs) == 3
    for fill, dsa in pairs:
        assert fill.shape == dsa.shape == (128, 128) and np.isfinite(fill).all() and dsa.min() >= 0
    fill, dsa = (np.stack(a) for a in zip(*pairs))
    assert (dsa > 0.05).mean() > 0.005                           # opacified arteries in the fields
    # the fill is the background plus that iodine: darker (higher) on the vessels than around them
    on = dsa > 0.1
    near = ndimage.binary_dilation(on, iterations=3, structure=np.ones((1, 3, 3))) & (dsa == 0)
    assert fill[on].mean() > fill[near].mean()
