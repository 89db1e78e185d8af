"""angiorecon: 3D vessel reconstruction from X-ray angiography (engine of the Slicer extension).

Layers, top-down: ``formats`` (files) → ``geometry`` (cone-beam C-arm geometry) → ``operators``
(projectors, FDK, SART) → ``models`` (learned fields, Gaussians, networks) → ``vessels`` and
``metrics`` (meshes, centerlines, evaluation) → ``simulation`` → ``pipelines`` (tasks) →
``cli``/``worker`` (one background-worker protocol). Nothing here imports Slicer or Qt.
"""

__version__ = "0.1.0"
