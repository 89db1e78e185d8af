"""Configure, build and install the extension with real CMake against a stand-in Slicer
(``cmake_stub/``), then run the engine from the installed tree the way Slicer would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from module_paths import MODULES, REPO

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="cmake and a C++ compiler are needed to configure the extension")
SCRIPTED = Path("lib/Slicer-5.13/qt-scripted-modules")


def _cmake(*args: object, cwd: Path) -> None:
    res = subprocess.run(["cmake", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("extension")
    _cmake("-S", REPO, "-B", tmp / "build", f"-DSlicer_DIR={Path(__file__).resolve().parent / 'cmake_stub'}", cwd=tmp)
    _cmake("--build", tmp / "build", cwd=tmp)
    _cmake("--install", tmp / "build", "--prefix", tmp / "install", cwd=tmp)
    return tmp / "install" / SCRIPTED


def test_install_tree_has_modules_libs_resources_and_engine(installed):
    for module in MODULES:
        assert (installed / f"{module}.py").is_file()
        assert (installed / f"{module}Lib" / "__init__.py").is_file()
        assert (installed / "Resources" / "UI" / f"{module}.ui").is_file()
        assert (installed / "Resources" / "Icons" / f"{module}.png").is_file()
    assert (installed / "Resources" / "requirements.txt").is_file()
    engine = sorted(str(p.relative_to(REPO)) for p in (REPO / "angiorecon").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    shipped = sorted(str(p.relative_to(installed)) for p in (installed / "angiorecon").rglob("*") if p.is_file())
    assert shipped == engine


def test_installed_runner_runs_installed_engine(installed, tmp_path):
    """The installed DSAReconstructionLib finds the installed engine (no pip, no source tree)."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(installed)!r})
        from DSAReconstructionLib.process import BackgroundProcess, engine_root
        proc = BackgroundProcess("selftest", {{"steps": 2, "step_seconds": 0}}, {str(tmp_path / "out")!r}, device="cpu")
        proc.start()
        proc.wait(120)
        print(json.dumps({{"root": str(engine_root()), "state": proc.state.value, "message": proc.message}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == {"root": str(installed), "state": "finished", "message": ""}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["task"] == "selftest"
    where = subprocess.run([sys.executable, "-c", "import angiorecon; print(angiorecon.__file__)"], cwd=tmp_path,
                           env={**env, "PYTHONPATH": str(installed)}, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).parent == installed / "angiorecon"
