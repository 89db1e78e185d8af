"""Shared, Slicer-free logic of the SlicerAngioRecon modules.

``process`` runs engine tasks in the background; ``mrml_io`` loads engine outputs into an MRML
scene (slicer-core or Slicer); ``jobs`` builds the job dictionaries of the engine tasks. Nothing
here imports ``qt``, ``ctk`` or ``slicer.app`` at import time, so it is tested under slicer-core.
"""
