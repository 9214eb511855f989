"""Deprecated: `keras_vit.loading` moved to `keras_vit.weights` and `keras_vit.models.opening` (0.3); this alias goes in 0.4."""

import warnings

from keras_vit.models.opening import load_model, open_model
from keras_vit.weights.pipeline import load_weights
from keras_vit.weights.sources import RECORDED as ARCHITECTURE, architecture_of

warnings.warn(
    "keras_vit.loading is deprecated: use keras_vit.load_weights, keras_vit.load_model, keras_vit.open_model and "
    "keras_vit.weights.architecture_of.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ARCHITECTURE", "architecture_of", "load_model", "load_weights", "open_model"]
