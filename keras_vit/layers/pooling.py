"""Reduces the encoder's token sequence to one representation per image."""

from __future__ import annotations

import keras
from keras import ops

#: "token": the class token's output (index 0); "gap": the mean of all tokens.
CLASSIFIERS = ("token", "gap")


@keras.saving.register_keras_serializable(package="keras_vit")
class SequencePooling(keras.layers.Layer):
    """Pools [batch, N, D] encoder outputs to [batch, D].

    Args:
        mode: "token" takes the class token (index 0); "gap" averages all
            tokens (the reference's `gap` models have no class token).
    """

    def __init__(self, mode: str = "token", **kwargs):
        super().__init__(**kwargs)
        if mode not in CLASSIFIERS:
            raise ValueError(f"Unknown classifier {mode!r}; expected one of {CLASSIFIERS}.")
        self.mode = mode

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, 0]
        return ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
