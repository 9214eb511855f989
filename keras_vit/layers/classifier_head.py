"""The classification head: a zero-initialised Dense that is replaced, not loaded, for a new task."""

from __future__ import annotations

import logging

import numpy as np
import keras

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="keras_vit")
class ClassifierHead(keras.layers.Dense):
    """`keras.layers.Dense` to the class logits, zero-initialised as in the paper's fine-tuning.

    When weights saved for another number of classes are loaded (a `.keras`
    or `.weights.h5` file of another task), the head keeps its fresh
    initialisation instead of failing, as the reference does when it reuses a
    checkpoint for a new task; every other layer still loads strictly.
    Takes the arguments of `keras.layers.Dense`; initializers default to zeros.

    Shapes:
        input: [batch, D]; output: [batch, units].
    """

    def __init__(self, units: int, kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer, bias_initializer=bias_initializer, **kwargs)

    def load_own_variables(self, store):
        stored = [np.shape(store[str(i)]) for i in range(len(store.keys()))]
        expected = [tuple(v.shape) for v in self.weights]
        if stored != expected:
            logger.warning(
                "Not loading the classifier head %r: stored shapes %s differ from %s (another number of classes); "
                "keeping a new zero-initialised head.",
                self.name,
                stored,
                expected,
            )
            return
        super().load_own_variables(store)
