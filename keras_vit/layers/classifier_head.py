"""The classification head: a zero-initialised Dense, the layer a new task replaces."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_vit")
class ClassifierHead(keras.layers.Dense):
    """`keras.layers.Dense` to the class logits, zero-initialised as in the paper's fine-tuning.

    Whether stored weights of a head are used at all is the head policy of
    `keras_vit.load_weights` ("auto", "new" or "keep"). Takes the arguments of
    `keras.layers.Dense`; initializers default to zeros.

    Shapes:
        input: [batch, D]; output: [batch, units].
    """

    def __init__(self, units: int, kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer, bias_initializer=bias_initializer, **kwargs)
