"""Slicer-free logic of the SyntheticDSA module (job building); MRML glue is shared in ``DSAReconstructionLib``."""
