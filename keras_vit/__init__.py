"""keras_vit: the Vision Transformer (Dosovitskiy et al., ICLR 2021) for Keras 3 and TensorFlow."""

from keras_vit import analysis, imagenet, layers, losses
from keras_vit.checkpoints import load_npz, save_npz
from keras_vit.imagenet import decode_predictions
from keras_vit.layers import AddPositionEmbedding, ClassToken, PatchEmbedding, TransformerBlock
from keras_vit.loading import load_model, load_weights
from keras_vit.models.constructors import CONSTRUCTORS, ViT, create_model
from keras_vit.models.masked_patch_prediction import MaskedPatchPrediction
from keras_vit.models.resnet import ResNet
from keras_vit.models.variants import VARIANTS, get_variant
from keras_vit.models.vision_transformer import VisionTransformer
from keras_vit.preprocessing import preprocess_input
from keras_vit.schedules import PerUpdate, WarmupDecay

__version__ = "0.2.0"

ViT_Ti16 = CONSTRUCTORS["ViT_Ti16"]
ViT_S16 = CONSTRUCTORS["ViT_S16"]
ViT_S32 = CONSTRUCTORS["ViT_S32"]
ViT_B8 = CONSTRUCTORS["ViT_B8"]
ViT_B16 = CONSTRUCTORS["ViT_B16"]
ViT_B32 = CONSTRUCTORS["ViT_B32"]
ViT_L16 = CONSTRUCTORS["ViT_L16"]
ViT_L32 = CONSTRUCTORS["ViT_L32"]
ViT_H14 = CONSTRUCTORS["ViT_H14"]
R50_ViT_B16 = CONSTRUCTORS["R50_ViT_B16"]
R26_ViT_S32 = CONSTRUCTORS["R26_ViT_S32"]
R26_ViT_B32 = CONSTRUCTORS["R26_ViT_B32"]
R50_ViT_L32 = CONSTRUCTORS["R50_ViT_L32"]
R_ViT_Ti16 = CONSTRUCTORS["R_ViT_Ti16"]

__all__ = [
    "AddPositionEmbedding",
    "ClassToken",
    "PatchEmbedding",
    "TransformerBlock",
    "VARIANTS",
    "ViT",
    "VisionTransformer",
    "analysis",
    "MaskedPatchPrediction",
    "PerUpdate",
    "ResNet",
    "WarmupDecay",
    "create_model",
    "decode_predictions",
    "get_variant",
    "imagenet",
    "layers",
    "load_model",
    "load_npz",
    "load_weights",
    "losses",
    "preprocess_input",
    "save_npz",
    *VARIANTS,
]
