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


#: Keras' probabilistic losses by the names `compile` takes: each reads probabilities unless given from_logits=True.
PROBABILISTIC_LOSSES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}


def loss_for_outputs(loss, logits: bool):
    """The loss `compile` gives Keras for a classifier whose outputs are logits (`logits=True`) or probabilities.

    "auto" is the sparse categorical cross-entropy on what the model outputs
    (keras-hub's tasks do the same). A probabilistic loss named by its string
    gets `from_logits=True` on a logits model, so the standard Keras recipe
    (`compile(loss="sparse_categorical_crossentropy")`) trains. A loss object
    whose `from_logits` disagrees with the outputs is refused: read as
    probabilities, the zero head's logits give a flat loss (NaN on JAX) and
    nothing learns, without a warning from Keras.
    """
    if isinstance(loss, str) and loss == "auto":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    if isinstance(loss, str) and loss in PROBABILISTIC_LOSSES and logits:
        return PROBABILISTIC_LOSSES[loss](from_logits=True)
    from_logits = getattr(loss, "from_logits", None)
    if from_logits is not None and bool(from_logits) != logits:
        outputs = "logits (classifier_activation=None)" if logits else "probabilities (classifier_activation='softmax')"
        raise ValueError(
            f"The model outputs {outputs}, but the loss {getattr(loss, 'name', loss)!r} has from_logits={from_logits}: "
            f"pass from_logits={logits}, or loss='auto'."
        )
    return loss
