"""pytest plugin with the headless MRML scene fixtures (``slicer_ecosystem.md`` §4.4).

The fixtures live in this plugin module rather than in a ``conftest.py`` because pytest imports
every ``conftest.py`` under the module name ``conftest``; a second one would shadow
``Testing/conftest.py`` for the ``from conftest import run_engine`` of test folders collected
after this one. Test modules that need them declare ``pytest_plugins = ["slicer_fixtures"]``.
"""

from __future__ import annotations

import pytest

import module_paths  # noqa: F401  (module folders on sys.path)


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


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory):
    """One cache folder of simulated sample cases for the whole session (each case is simulated once)."""
    return tmp_path_factory.mktemp("angiorecon-samples")
