"""`load_weights`: read a source into the canonical layout, validate it against the model, then assign it.

Every format and every model class goes through these three steps, in this
order, so a source that does not fit changes no variable.
"""

from __future__ import annotations

import os

import numpy as np
import keras

from keras_vit import position_embeddings
from keras_vit.weights import layout, sources
from keras_vit.weights.validation import validate


def load_weights(model: keras.Model, source: str | os.PathLike, head: str = "auto") -> None:
    """Loads weights into a keras_vit model, all or nothing.

    Args:
        model: a `keras_vit.VisionTransformer` (also `ResNet` and
            `MaskedPatchPrediction`, which load strictly: every weight, same shapes).
        source: an original `.npz` checkpoint (any released layout), a `.keras`
            or `.weights.h5` file, or a known release name of `model.variant`
            ("imagenet21k", ...). A `.keras` file of a `MaskedPatchPrediction`
            gives its backbone. Position embeddings stored for another grid are
            resized to the model's; a fine-tuned release used at another
            resolution than its own warns.
        head: the classification head's policy (`HEAD_POLICIES`): "new" keeps
            the model's zero-initialised head, as fine-tuning does in the paper
            and the reference; "keep" loads the stored head and refuses a
            source without one that fits; "auto" (default) keeps a stored head
            that fits the model's classes and otherwise starts a new one.
            `pre_logits` is dropped when the model has no representation layer.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the source is unreadable or does not fit; the message names
            it, the first problem and the count of the rest. Nothing is assigned.
    """
    _assign(validate(model, sources.read(source, model), head))


def load_npz(model: keras.Model, path: str | os.PathLike, head: str = "auto") -> None:
    """Loads an original `.npz` checkpoint into a `VisionTransformer` (`load_weights` for `.npz` files)."""
    _assign(validate(model, sources.read_npz(path), head))


def _assign(assignments: list[tuple[keras.Variable, np.ndarray]]) -> None:
    for variable, value in assignments:
        variable.assign(np.asarray(value, dtype=variable.dtype))


def save_npz(model: keras.Model, path: str | os.PathLike) -> None:
    """Writes a `VisionTransformer`'s weights as an `.npz` in the released files' layout (plus its grid where needed)."""
    params = {layout.released_name(key): value for key, value in layout.checkpoint_values(model).items()}
    grid = model.grid_size
    if grid[0] != grid[1] or not position_embeddings.get(model.position_embedding).table_tells_grid:
        params[layout.NPZ_GRID_KEY] = np.asarray(grid, np.int64)
    for option, default in layout.NPZ_OPTIONS.items():
        if getattr(model, option) != default:
            params[layout.npz_option_key(option)] = np.asarray(getattr(model, option))
    with open(path, "wb") as f:
        np.savez(f, **params)


class WeightsLoading:
    """Mixin of keras_vit's models: `model.load_weights(path)` is `keras_vit.load_weights` (head policy "auto").

    `skip_mismatch=True` or other Keras options give Keras' own lenient load.
    """

    def load_weights(self, filepath, skip_mismatch: bool = False, **kwargs) -> None:
        if skip_mismatch or kwargs:
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
        load_weights(self, filepath)
