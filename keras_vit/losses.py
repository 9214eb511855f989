"""The sigmoid cross-entropy of ViT's ImageNet-21k and JFT pre-training."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class SigmoidCrossEntropy(keras.losses.Loss):
    """Independent binary cross-entropies of every class, summed over classes.

    This is big_vision's `sigmoid_xent` (`utils.py`): per example
    `-sum_c [y_c log sigmoid(z_c) + (1 - y_c) log sigmoid(-z_c)]`, then the
    mean over the batch. Keras' `BinaryCrossentropy` takes the mean over
    classes instead, which would scale the gradient down by the number of
    classes. Part of keras_vit so that a `.keras` file compiled with it loads
    wherever keras_vit is imported.

    Shapes:
        y_true: [batch, classes] multi-hot (or one-hot) targets.
        y_pred: [batch, classes] logits.
        output: [batch] losses (then reduced over the batch).
    """

    def __init__(self, name: str = "sigmoid_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true, "float32")
        # log sigmoid(z) = -softplus(-z); log sigmoid(-z) = -softplus(z)
        return ops.sum(labels * ops.softplus(-logits) + (1.0 - labels) * ops.softplus(logits), axis=-1)
