#!/usr/bin/env python3
"""Set up a local virtual environment and run the demo or the tests (stdlib only).

    python3 dev.py demo     # create .venv, install, simulate + reconstruct the sample case
    python3 dev.py test     # create .venv, install with test extras, run the test suite

Environment: ``TORCH_SPEC`` (default ``torch==2.13.0``) chooses the PyTorch wheel to install
before the package, so a CPU-only machine does not pull the CUDA wheels; ``VENV`` the folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VENV", ROOT / ".venv"))
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")


def _bin(name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return VENV / sub / (name + (".exe" if os.name == "nt" else ""))


def _run(*cmd: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def setup(extras: str) -> None:
    stamp = VENV / f".installed-{extras or 'base'}"
    newest = max(p.stat().st_mtime for p in (ROOT / "pyproject.toml", Path(__file__)))
    if stamp.exists() and stamp.stat().st_mtime >= newest:
        return
    if not _bin("python").exists():
        venv.create(VENV, with_pip=True)
    py = _bin("python")
    _run(py, "-m", "pip", "install", "-q", "--upgrade", "pip")
    _run(py, "-m", "pip", "install", "-q", TORCH_SPEC)
    _run(py, "-m", "pip", "install", "-q", "-e", f".[{extras}]" if extras else ".")
    stamp.touch()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    setup("test" if cmd in ("test", "setup") else "")
    py = _bin("python")
    try:
        if cmd == "demo":
            _run(py, "-m", "angiorecon", "demo", "--out", ROOT / "demo_output", "--overwrite", *rest)
        elif cmd == "test":
            _run(py, "-m", "pytest", "-q", *(rest or ["Testing"]))
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
