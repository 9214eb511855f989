"""Deprecated: `keras_vit.checkpoints` moved into `keras_vit.weights` (0.3); this alias goes in 0.4."""

import warnings

from keras_vit.weights.layout import checkpoint_variables
from keras_vit.weights.pipeline import load_npz, save_npz
from keras_vit.weights.sources import npz_architecture

warnings.warn(
    "keras_vit.checkpoints is deprecated: use keras_vit.load_npz / save_npz, keras_vit.weights.npz_architecture "
    "and keras_vit.weights.checkpoint_variables.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["checkpoint_variables", "load_npz", "npz_architecture", "save_npz"]
