"""The classification head: a zero-initialised Dense, the layer a new task replaces."""

from __future__ import annotations

import contextlib

import numpy as np
import keras

from keras_vit.utils import keeps_first_load_error


@keras.saving.register_keras_serializable(package="keras_vit")
class ClassifierHead(keras.layers.Dense):
    """`keras.layers.Dense` to the class logits, zero-initialised as in the paper's fine-tuning.

    Loading is strict: stored weights of other shapes raise a ValueError
    naming both. Whether a stored head is used at all is decided by
    `keras_vit.load_weights` (kept when it fits the task, else a new head),
    which loads around this layer with `skipping_load()` when it is not.
    Takes the arguments of `keras.layers.Dense`; initializers default to zeros.

    Shapes:
        input: [batch, D]; output: [batch, units].
    """

    def __init__(self, units: int, kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer, bias_initializer=bias_initializer, **kwargs)
        self._skip_load = False

    @contextlib.contextmanager
    def skipping_load(self):
        """Within this context, loading a model's weights leaves this head as it is."""
        self._skip_load = True
        try:
            yield self
        finally:
            self._skip_load = False

    @keeps_first_load_error
    def load_own_variables(self, store):
        if self._skip_load:
            return
        stored = [np.shape(store[str(i)]) for i in range(len(store.keys()))]
        expected = [tuple(v.shape) for v in self.weights]
        if stored != expected:
            raise ValueError(
                f"Cannot load the classifier head {self.name!r}: stored shapes {stored}, the model's {expected}."
            )
        super().load_own_variables(store)
