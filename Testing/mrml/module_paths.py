"""Put the three module folders on ``sys.path``, exactly as Slicer's "additional module paths" do,
so ``import DSAReconstructionLib`` in a test is the same import the modules make inside Slicer."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ("DSAReconstruction", "SyntheticDSA", "CoronaryTwoView")
for _name in MODULES:
    if str(REPO / _name) not in sys.path:
        sys.path.insert(0, str(REPO / _name))
