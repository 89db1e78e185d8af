"""Numerical core: Joseph projector (numba CPU and differentiable torch), FDK, SART.

``forward_project`` / ``back_project`` are the fast CPU pair (exact adjoints); the torch path
(:mod:`.projector_torch`) traces the same rays and is what learned methods differentiate through.
"""

from .fdk import fdk
from .projector_cpu import back_project, forward_project
from .sart import sart

__all__ = ["forward_project", "back_project", "fdk", "sart"]
