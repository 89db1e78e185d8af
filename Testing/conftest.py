"""Shared pytest fixtures: run the engine CLI in a subprocess, temp folders, repo paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning torch threads made
# the CPU training tests up to 5x slower. Set before any test imports torch; child engines inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_engine(*args: object, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m angiorecon ARGS`` and capture its output."""
    e = dict(os.environ)
    e.setdefault("PYTHONPATH", str(REPO))
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "angiorecon", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=REPO)


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def engine():
    return run_engine
