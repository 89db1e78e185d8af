"""Slicer-free logic of the CoronaryTwoView module (job building); MRML glue is shared in ``DSAReconstructionLib``."""
