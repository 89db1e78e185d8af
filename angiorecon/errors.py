"""Error kinds shared by the CLI, the background worker and the Slicer modules.

Every failure a user can cause or meet is one of these, so that the worker can turn it into a
one-line ``error`` event with a documented exit code instead of a traceback.

Exit codes (documented in README "Exit codes"):

====  ==============  ===========================================================
code  kind            meaning
====  ==============  ===========================================================
0     -               success, ``manifest.json`` written
1     internal        a bug: the message says what failed; the traceback goes to stderr
2     bad-input       unreadable/invalid input or arguments (which file, which tag, what was expected)
3     out-of-memory   the request would not fit (estimated before allocating) or allocation failed
4     device          ``--device cuda`` asked for but no CUDA device is usable
130   cancelled       SIGINT/SIGTERM received; nothing was written to the output folder
====  ==============  ===========================================================
"""

from __future__ import annotations


class AngioError(Exception):
    """Base class: an expected failure with a user-facing one-line message."""

    kind: str = "internal"
    exit_code: int = 1


class BadInput(AngioError):
    """Input files or parameters are invalid; the message names the file/tag and what was expected."""

    kind = "bad-input"
    exit_code = 2


class OutOfMemory(AngioError):
    """The request does not fit in memory (checked before allocating where possible)."""

    kind = "out-of-memory"
    exit_code = 3


class DeviceUnavailable(AngioError):
    """The requested compute device cannot be used."""

    kind = "device"
    exit_code = 4


class Cancelled(AngioError):
    """The run was cancelled by SIGINT/SIGTERM at a safe point."""

    kind = "cancelled"
    exit_code = 130


def check_memory(n_bytes: float, what: str, *, fraction: float = 0.8) -> None:
    """Refuse an allocation of ``n_bytes`` that would exceed ``fraction`` of the available RAM.

    Called before large allocations so that an enormous request fails with a clear message
    instead of an OOM kill that leaves nothing but a dead process.
    """
    import psutil

    available = psutil.virtual_memory().available
    if n_bytes > fraction * available:
        raise OutOfMemory(
            f"{what} needs about {n_bytes / 2**30:.1f} GiB but only "
            f"{available / 2**30:.1f} GiB of memory is available; reduce the size or the number of views"
        )
