"""keras_vit: the Vision Transformer (Dosovitskiy et al., ICLR 2021) for Keras 3.

`import keras_vit` imports Keras (on the TensorFlow backend, TensorFlow too)
and every module that registers a Keras class, as keras-hub does, so that
`keras.saving.load_model` finds keras_vit's layers and models after a plain
`import keras_vit`. TensorFlow's INFO-level C++ log lines stay off unless
`TF_CPP_MIN_LOG_LEVEL` says otherwise (`keras_vit._quiet_start`). The
sub-packages `analysis` and `weights` import their names on first use.
"""

from keras_vit._quiet_start import import_keras

import_keras()  # first: every module below defines Keras classes

from keras_vit import analysis, imagenet, layer_decay, layers, losses, weights
from keras_vit.imagenet import decode_predictions
from keras_vit.layers import AddPositionEmbedding, ClassToken, PatchEmbedding, TransformerBlock
from keras_vit.models.constructors import CONSTRUCTORS, ViT, create_model
from keras_vit.models.masked_patch_prediction import MaskedPatchPrediction
from keras_vit.models.opening import load_model, open_model
from keras_vit.models.resnet import ResNet
from keras_vit.models.variants import VARIANTS, get_variant
from keras_vit.models.vision_transformer import VisionTransformer
from keras_vit.preprocessing import preprocess_input
from keras_vit.schedules import PerUpdate, WarmupDecay
from keras_vit.weights.pipeline import load_npz, load_weights, save_npz
from keras_vit.weights.saving import save_checkpoint

__version__ = "0.2.0"

globals().update(CONSTRUCTORS)  # ViT_Ti16, ViT_B16, ... (keras_vit.VARIANTS' rows)

__all__ = sorted([
    "AddPositionEmbedding", "CONSTRUCTORS", "ClassToken", "MaskedPatchPrediction", "PatchEmbedding", "PerUpdate",
    "ResNet", "TransformerBlock", "VARIANTS", "ViT", "VisionTransformer", "WarmupDecay", "analysis",
    "create_model", "decode_predictions", "get_variant", "imagenet", "layers", "load_model", "load_npz",
    "load_weights", "losses", "open_model", "preprocess_input", "save_checkpoint", "save_npz", "weights", *CONSTRUCTORS,
])
