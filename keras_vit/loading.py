"""Loading weights into a keras_vit model, and loading saved models.

One fine-tuning head policy for every format, decided here when weights load:
the stored head is kept when its shapes fit the model's `classes`, and
otherwise the model keeps its new zero-initialised head (the reference's rule
for reusing a checkpoint on a new task). Every other weight loads strictly.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile

import keras

from keras_vit import checkpoints, weights as known_weights

logger = logging.getLogger(__name__)

KERAS_FORMATS = (".keras", ".weights.h5", ".h5")


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file of a keras_vit model for inference, evaluation or export.

    The training configuration is not restored (`compile=False`): inference
    needs no optimizer. Loads with `safe_mode=True`. `keras.models.load_model`
    works as well, after `import keras_vit`.
    """
    if not os.path.exists(path):
        raise ValueError(f"Model file {os.fspath(path)!r} does not exist.")
    return keras.models.load_model(path, compile=False, safe_mode=True)


def load_weights(model, weights: str | os.PathLike) -> None:
    """Loads `.npz`, `.keras` or `.weights.h5` weights, or a known name of `model.variant`, into `model`.

    Position embeddings stored for another grid are resized to the model's;
    the head follows the module's policy (kept when it fits, else new). A
    known fine-tuned release used at another resolution than its own warns.
    """
    path = os.fspath(weights)
    if not os.path.exists(path):
        if path.endswith((".npz", *KERAS_FORMATS)):
            raise FileNotFoundError(f"Weights file not found: {path!r}.")
        name, path = path, known_weights.download_weights(model.variant, path)
        known_weights.check_resolution(model.variant, name, model.image_size)
    if path.endswith(KERAS_FORMATS):
        _load_keras_weights(model, path)
    else:
        checkpoints.load_npz(model, path)


def keep_head(model, stored_shapes: list[tuple[int, ...]]) -> bool:
    """The head policy: True when the stored head's shapes fit the model's head (logged when not)."""
    if model.head is None:
        return False
    expected = [tuple(v.shape) for v in model.head.weights]
    if [tuple(s) for s in stored_shapes] == expected:
        return True
    logger.info(
        "The stored head %s does not fit %d classes: keeping a new zero-initialised head.",
        [tuple(s) for s in stored_shapes],
        model.classes,
    )
    return False


def _load_keras_weights(model, path: str) -> None:
    head = model.head
    if head is None:
        model.load_weights(path)
        return
    # Keras 3 files name a functional model's layers by class ("classifier_head"); older ones by layer name.
    stored = _stored_variable_shapes(path, ("layers/classifier_head/vars", f"layers/{head.name}/vars"))
    if keep_head(model, stored):
        model.load_weights(path)
        return
    with head.skipping_load():
        model.load_weights(path)


def _stored_variable_shapes(path: str, groups: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Shapes of the variables under the first of `groups` in a `.weights.h5` file, or in the weights of a `.keras` zip."""
    import h5py

    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            data = io.BytesIO(archive.read("model.weights.h5"))
        source = h5py.File(data, "r")
    else:
        source = h5py.File(path, "r")
    with source:
        for group in groups:
            if group in source:
                variables = source[group]
                return [tuple(variables[str(i)].shape) for i in range(len(variables))]
        return []
