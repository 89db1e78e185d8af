"""The worker protocol from the engine side: events, exit codes, staging, manifest."""

from __future__ import annotations

import json

from conftest import json_events, run_engine


def test_selftest_json_events_and_manifest(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"steps": 4, "step_seconds": 0.01}))
    out = tmp_path / "out"
    res = run_engine("selftest", "--job", job, "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    events = json_events(res.stdout)
    progress = [e["fraction"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] == 1.0
    assert events[-1]["event"] == "result"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "selftest" and manifest["device"] == "cpu"
    assert manifest["job"]["steps"] == 4
    assert [o["role"] for o in manifest["outputs"]] == ["other"]
    assert sorted(p.name for p in (out / "steps").iterdir()) == [f"step_{i:03d}.txt" for i in range(4)]
    assert not list(tmp_path.glob(".out.partial-*"))


def test_bad_input_is_one_line_error_and_no_output(tmp_path):
    out = tmp_path / "out"
    res = run_engine("selftest", "--steps", "4", "--step-seconds", "0", "--fail", "bad-input", "--out", out)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error (bad-input): selftest was asked")
    assert "Traceback" not in res.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_internal_error_event_carries_message(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"steps": 2, "step_seconds": 0, "fail": "internal"}))
    res = run_engine("selftest", "--job", job, "--out", tmp_path / "out")
    assert res.returncode == 1
    err = [e for e in json_events(res.stdout) if e["event"] == "error"]
    assert err == [{"event": "error", "kind": "internal",
                    "message": "RuntimeError: selftest was asked to fail with an internal error"}]
    assert not (tmp_path / "out").exists()


def test_unreadable_job_file(tmp_path):
    job = tmp_path / "job.json"
    job.write_text("{not json")
    res = run_engine("selftest", "--job", job, "--out", tmp_path / "out")
    assert res.returncode == 2
    assert "is not valid JSON" in res.stderr


def test_refuses_non_empty_output_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = run_engine("selftest", "--steps", "1", "--out", out)
    assert res.returncode == 2 and "not empty" in res.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_cuda_request_without_cuda_is_device_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    res = run_engine("selftest", "--steps", "1", "--device", "cuda", "--out", tmp_path / "o")
    assert res.returncode == 4 and "no CUDA device" in res.stderr
