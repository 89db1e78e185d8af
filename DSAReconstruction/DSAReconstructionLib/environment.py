"""What the engine needs from the Python it runs in: its packages and, optionally, a GPU.

Pure logic (no ``slicer``/``qt``), so it is tested outside Slicer; the modules use it when Apply is
pressed (never at import time) to decide what to install through ``PyTorchUtils`` (torch) and
``slicer.packaging.pip_ensure`` (everything else), and to name the GPU next to the device choice.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Sequence

from packaging.requirements import InvalidRequirement, Requirement

#: packages that come from elsewhere inside Slicer: torch from the PyTorch extension, vtk from Slicer.
PROVIDED_ELSEWHERE = ("torch", "vtk")


def read_requirements(path: str | Path) -> list[str]:
    """Requirement lines of a ``requirements.txt`` (comments and blank lines dropped); raises on bad lines."""
    reqs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            Requirement(text)
        except InvalidRequirement as exc:
            raise ValueError(f"{path}:{number}: {text!r} is not a requirement ({exc})") from None
        reqs.append(text)
    return reqs


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (``scikit_image`` == ``scikit-image``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(requirements: Iterable[str],
                         version_of: Callable[[str], str] = importlib.metadata.version,
                         skip: Sequence[str] = PROVIDED_ELSEWHERE) -> list[str]:
    """The requirements that are not installed, or installed in a version that does not satisfy them.

    ``version_of(name)`` returns the installed version or raises ``PackageNotFoundError``.
    Packages in ``skip`` are never reported (they are installed another way).
    """
    skipped = {canonical_name(s) for s in skip}
    missing = []
    for text in requirements:
        req = Requirement(text)
        if canonical_name(req.name) in skipped or (req.marker is not None and not req.marker.evaluate()):
            continue
        try:
            installed = version_of(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def gpu_names(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """Names of the NVIDIA GPUs the driver reports (``nvidia-smi``); empty when there is none.

    Asks the driver rather than PyTorch so the panel can show it before PyTorch is installed.
    """
    try:
        done = run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                   timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def device_description(names: Sequence[str]) -> str:
    """One line for the panel next to the device choice: which GPU ``auto``/``cuda`` will use."""
    if not names:
        return "No NVIDIA GPU found: runs on the CPU"
    others = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
    return f"GPU: {names[0]}{others}"
