"""Weight-standardised 2-D convolution (BiT / the ViT hybrids' ResNet)."""

from __future__ import annotations

import keras
from keras import ops

#: Added to the standard deviation (not inside the square root), as the reference does.
WEIGHT_STANDARDIZATION_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="keras_vit")
class StdConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose kernel is standardised on every call.

    Per output channel, `(w - mean) / (std + 1e-5)` over (kh, kw, c_in) with the
    population std; the stored kernel stays unstandardised, as in the reference.
    Takes the arguments of `keras.layers.Conv2D`.
    """

    def convolution_op(self, inputs, kernel):
        kernel = ops.cast(kernel, "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        std = ops.std(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) / (std + WEIGHT_STANDARDIZATION_EPSILON)
        return super().convolution_op(inputs, ops.cast(kernel, inputs.dtype))
