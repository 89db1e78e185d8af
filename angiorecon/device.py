"""Compute-device selection: ``auto`` picks CUDA when usable, else CPU."""

from __future__ import annotations

from .errors import DeviceUnavailable

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> str:
    """Return a torch device string ("cpu" or "cuda") for ``auto|cpu|cuda``.

    ``cuda`` raises :class:`DeviceUnavailable` when no CUDA device can be used, so a user who asked
    for the GPU learns it instead of silently waiting for a CPU run.
    """
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise DeviceUnavailable(f"unknown device {name!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if name == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of the learned methods
        if name == "auto":
            return "cpu"
        raise DeviceUnavailable("PyTorch is not installed, so CUDA cannot be used") from None
    if torch.cuda.is_available():
        return "cuda" if name == "auto" else name
    if name == "auto":
        return "cpu"
    raise DeviceUnavailable(f"--device {name} requested but no CUDA device is available; use --device cpu")


def device_description(device: str) -> str:
    """Human-readable device name, e.g. ``cuda (NVIDIA H100)`` or ``cpu (2 threads)``."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"
