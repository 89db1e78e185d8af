"""Few-view coronary reconstruction: inputs and 2D segmentation, 3D methods, graph fitting."""
