"""Deep DSA (DDSA): a network that extracts the vessel (iodine) signal from a single fill frame.

``domain`` (the intensity domain stored in every model), ``data`` (pair sources, augmentation,
datasets), ``train`` (U-Net / WGAN-GP training, checkpoints, DDP), ``infer`` (model loading, tiled
inference, file readers), ``frangi`` (the classical vesselness baseline), ``sources`` (pairs from the
simulation engine).
"""
