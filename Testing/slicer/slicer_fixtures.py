"""Shared set-up for the Slicer-side tests: module folders on ``sys.path`` and a headless MRML scene.

The three module folders are put on ``sys.path`` exactly as Slicer's "additional module paths"
do, so ``import DSAReconstructionLib`` here is the same import the modules make inside Slicer.

The fixtures live in this module rather than in a ``conftest.py`` because pytest imports every
``conftest.py`` under the module name ``conftest``; a second one would shadow
``Testing/conftest.py`` for the ``from conftest import run_engine`` of test folders collected
after this one. Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("DSAReconstruction", "SyntheticDSA", "CoronaryTwoView")
for _name in MODULES:
    if str(REPO / _name) not in sys.path:
        sys.path.insert(0, str(REPO / _name))


@pytest.fixture
def mrml_scene(tmp_path):
    """A headless scene with the module logics and the data-IO manager attached (ecosystem §4.4)."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from DSAReconstructionLib.headless import create_headless_scene

    headless = create_headless_scene(tmp_path / "mrml-cache")
    yield headless
    headless.close()


@pytest.fixture
def new_mrml_scene(tmp_path):
    """Factory for further headless scenes (e.g. to reload a ``.mrb`` into a fresh scene)."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from DSAReconstructionLib.headless import create_headless_scene

    made = []

    def make():
        made.append(create_headless_scene(tmp_path / f"mrml-cache-{len(made)}"))
        return made[-1]

    yield make
    for headless in made:
        headless.close()
