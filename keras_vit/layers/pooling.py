"""Reduces the encoder's token sequence to one representation per image."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.options import CLASSIFIERS, POOLINGS


@keras.saving.register_keras_serializable(package="keras_vit")
class SequencePooling(keras.layers.Layer):
    """Pools [batch, N, D] encoder outputs to [batch, D].

    Args:
        mode: "token" takes the class token (`token_index`, default 0; DeiT's
            distillation token is at 1); "gap" averages all
            tokens (the reference's `gap` models have no class token); "avg"
            and "max" pool the patch tokens, after `num_prefix_tokens`.
        num_prefix_tokens: tokens before the patch tokens (1: the class token).
        token_index: the token "token" takes.
    """

    def __init__(self, mode: str = "token", num_prefix_tokens: int = 0, token_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        if mode not in CLASSIFIERS + POOLINGS:
            raise ValueError(f"Unknown pooling {mode!r}; expected one of {CLASSIFIERS + POOLINGS}.")
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        self.token_index = token_index

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, self.token_index]
        if self.mode == "gap":
            return ops.mean(inputs, axis=1)
        patches = inputs[:, self.num_prefix_tokens :]
        return ops.mean(patches, axis=1) if self.mode == "avg" else ops.max(patches, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, num_prefix_tokens=self.num_prefix_tokens, token_index=self.token_index)
        return config
