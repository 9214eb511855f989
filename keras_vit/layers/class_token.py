"""The learnable class token prepended to the patch sequence."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class ClassToken(keras.layers.Layer):
    """Prepends a learnable [1, 1, D] token (the reference's `cls`) at index 0.

    Shapes:
        input: [batch, N, D].
        output: [batch, N + 1, D].
    """

    def __init__(self, initializer: str | keras.initializers.Initializer = "zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"ClassToken expects [batch, tokens, hidden] inputs, got shape {input_shape}.")
        self.cls = self.add_weight(name="cls", shape=(1, 1, input_shape[-1]), initializer=self.initializer)

    def call(self, inputs):
        token = ops.cast(self.cls, inputs.dtype)
        token = ops.broadcast_to(token, (ops.shape(inputs)[0], 1, ops.shape(inputs)[2]))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config
