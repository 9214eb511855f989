"""keras_vit: the Vision Transformer (Dosovitskiy et al., ICLR 2021) for Keras 3 and TensorFlow.

The public names are imported on first use, so that the command-line tools
answer `--help` without starting TensorFlow. Keras still finds keras_vit's
layers and models when it loads a `.keras` file after a plain
`import keras_vit`: they are registered as soon as Keras is imported
(`keras_vit._registration`).
"""

from keras_vit._lazy import lazy_attributes
from keras_vit._registration import register_with_keras
from keras_vit.models.variants import VARIANTS

__version__ = "0.2.0"

#: Public name -> the module that defines it (or, for a sub-package, the sub-package).
_EXPORTS = {
    "analysis": "keras_vit.analysis",
    "imagenet": "keras_vit.imagenet",
    "layers": "keras_vit.layers",
    "losses": "keras_vit.losses",
    "AddPositionEmbedding": "keras_vit.layers",
    "ClassToken": "keras_vit.layers",
    "PatchEmbedding": "keras_vit.layers",
    "TransformerBlock": "keras_vit.layers",
    "weights": "keras_vit.weights",
    "load_npz": "keras_vit.weights.pipeline",
    "save_npz": "keras_vit.weights.pipeline",
    "load_weights": "keras_vit.weights.pipeline",
    "decode_predictions": "keras_vit.imagenet",
    "load_model": "keras_vit.models.opening",
    "open_model": "keras_vit.models.opening",
    "CONSTRUCTORS": "keras_vit.models.constructors",
    "ViT": "keras_vit.models.constructors",
    "create_model": "keras_vit.models.constructors",
    **{name: "keras_vit.models.constructors" for name in VARIANTS},  # ViT_B16, ...
    "get_variant": "keras_vit.models.variants",
    "MaskedPatchPrediction": "keras_vit.models.masked_patch_prediction",
    "ResNet": "keras_vit.models.resnet",
    "VisionTransformer": "keras_vit.models.vision_transformer",
    "preprocess_input": "keras_vit.preprocessing",
    "PerUpdate": "keras_vit.schedules",
    "WarmupDecay": "keras_vit.schedules",
}

__all__ = sorted(["VARIANTS", *_EXPORTS])
__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)

# Everything the package exports is imported once Keras is: its layers, models, losses and schedules get registered.
register_with_keras(sorted({module for module in _EXPORTS.values() if module != "keras_vit.analysis"}))
