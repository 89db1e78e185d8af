#!/usr/bin/env python3
"""Draw the extension and module icons (128×128 PNG) with matplotlib; rerun after changing a design.

    python Resources/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Arc, Circle, Polygon  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RED, DARK, BLUE, GREY = "#c0392b", "#1f2a36", "#2e86c1", "#aab7b8"


def _canvas():
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _tree(ax, x0=0.0, y0=-0.75, angle=np.pi / 2, length=0.55, width=7.0, depth=4):
    """A bifurcating vessel tree with Murray-like thinning."""
    x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
    ax.plot([x0, x1], [y0, y1], color=RED, lw=width, solid_capstyle="round")
    if depth > 1:
        for turn in (-0.55, 0.45):
            _tree(ax, x1, y1, angle + turn, length * 0.68, width * 0.72, depth - 1)


def _save(fig, *parts: str) -> None:
    path = ROOT.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, transparent=True)
    plt.close(fig)
    print(path.relative_to(ROOT))


def dsa_reconstruction() -> None:
    fig, ax = _canvas()
    ax.add_patch(Arc((0, 0), 1.85, 1.85, theta1=200, theta2=340, color=BLUE, lw=4))
    for a in np.deg2rad([210, 240, 270, 300, 330]):
        ax.add_patch(Circle((0.925 * np.cos(a), 0.925 * np.sin(a)), 0.07, color=DARK))
    _tree(ax, y0=-0.55, length=0.45)
    _save(fig, "DSAReconstruction", "Resources", "Icons", "DSAReconstruction.png")


def synthetic_dsa() -> None:
    fig, ax = _canvas()
    ax.add_patch(Circle((0, 0), 0.92, color=GREY, alpha=0.6))
    ax.add_patch(Circle((0, 0), 0.92, fill=False, color=DARK, lw=3))
    _tree(ax, y0=-0.7, length=0.5, depth=5, width=6)
    ax.text(0.55, 0.62, "S", color=DARK, fontsize=18, fontweight="bold", ha="center", va="center")
    _save(fig, "SyntheticDSA", "Resources", "Icons", "SyntheticDSA.png")


def coronary_two_view() -> None:
    fig, ax = _canvas()
    for src, det in (((-0.95, 0.75), [(0.2, -0.95), (0.95, -0.2)]), ((0.95, 0.75), [(-0.95, -0.2), (-0.2, -0.95)])):
        ax.add_patch(Polygon([src, *det], closed=True, color=BLUE, alpha=0.25))
        ax.plot(*zip(*det, strict=True), color=DARK, lw=4)
    _tree(ax, y0=-0.45, length=0.35, depth=4, width=6)
    _save(fig, "CoronaryTwoView", "Resources", "Icons", "CoronaryTwoView.png")


def extension() -> None:
    fig, ax = _canvas()
    ax.add_patch(Circle((0, 0), 0.97, color="white"))
    ax.add_patch(Arc((0, 0), 1.8, 1.8, theta1=190, theta2=350, color=BLUE, lw=5))
    _tree(ax, y0=-0.65, length=0.5, depth=5, width=7)
    _save(fig, "Resources", "Icons", "SlicerAngioRecon.png")


if __name__ == "__main__":
    dsa_reconstruction()
    synthetic_dsa()
    coronary_two_view()
    extension()
