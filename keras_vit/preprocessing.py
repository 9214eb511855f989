"""Input scaling of the reference: uint8 [0, 255] -> [-1, 1]."""

from __future__ import annotations

import keras


def preprocess_input(images):
    """Maps pixel values in [0, 255] to [-1, 1] as `(x - 127.5) / 127.5`.

    Args:
        images: array or tensor [..., H, W, C] of pixel values (any numeric dtype).

    Returns:
        float32 values in [-1, 1], of the same shape.
    """
    return preprocessing_layer()(keras.ops.cast(images, "float32"))


def preprocessing_layer(name: str = "preprocessing") -> keras.layers.Rescaling:
    """The scaling as a serialisable layer, for `include_preprocessing=True`."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
