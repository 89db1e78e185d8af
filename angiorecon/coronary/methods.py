"""Registry of the 3D coronary methods: one name → ``reconstruct_<name>(problem, **options)``.

The task, the benchmark and the Slicer module pick methods by name from here. ``DEFAULT_METHOD``
is the method that best meets the targets in ``benchmarks/coronary_quality.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import BadInput
from .hull import visual_hull
from .problem import CoronaryProblem, CoronaryResult, Progress


def reconstruct_hull(problem: CoronaryProblem, *, preset: str = "fast", device: str = "cpu", seed: int = 0,
                     progress: Progress | None = None) -> CoronaryResult:
    """Trivial baseline: the visual hull of the masks (every ghost intersection included)."""
    report = progress or (lambda f, m: None)
    report(0.1, "visual hull")
    occ = visual_hull(problem.geometry, problem.masks, problem.grid)
    report(1.0, "hull done")
    return CoronaryResult(occ.astype(np.float32), problem.grid, None, {"method": "hull"})


def reconstruct_autocar(problem: CoronaryProblem, **kw: Any) -> CoronaryResult:
    from .autocar import reconstruct_autocar as f

    return f(problem, **kw)


def reconstruct_epipolar(problem: CoronaryProblem, **kw: Any) -> CoronaryResult:
    from .epipolar import reconstruct_epipolar as f

    return f(problem, **kw)


def reconstruct_neca(problem: CoronaryProblem, **kw: Any) -> CoronaryResult:
    from .fields import reconstruct_neca as f

    return f(problem, **kw)


def reconstruct_sdfcar(problem: CoronaryProblem, **kw: Any) -> CoronaryResult:
    from .fields import reconstruct_sdfcar as f

    return f(problem, **kw)


#: method name → function (imports are deferred so one method's dependencies cannot break the others)
METHODS: dict[str, Callable[..., CoronaryResult]] = {
    "autocar": reconstruct_autocar,
    "sdfcar": reconstruct_sdfcar,
    "neca": reconstruct_neca,
    "epipolar": reconstruct_epipolar,
    "hull": reconstruct_hull,
}

DEFAULT_METHOD = "autocar"


def reconstruct(problem: CoronaryProblem, method: str = "default", **kw: Any) -> CoronaryResult:
    """Run ``method`` ("default" = ``DEFAULT_METHOD``) on ``problem``; BadInput for unknown names."""
    name = DEFAULT_METHOD if method in ("default", "", None) else method
    if name not in METHODS:
        raise BadInput(f"unknown coronary method {method!r}; choose one of default, {', '.join(METHODS)}")
    result = METHODS[name](problem, **kw)
    result.info.setdefault("method", name)
    return result
