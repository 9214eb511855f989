"""keras_vit: the Vision Transformer (Dosovitskiy et al., ICLR 2021) for Keras 3 and TensorFlow."""

from keras_vit import layers
from keras_vit.attention import attention_maps, attention_rollout, mean_attention_distance, patch_grid
from keras_vit.checkpoints import load_npz, save_npz
from keras_vit.layers import AddPositionEmbedding, ClassToken, PatchEmbedding, TransformerBlock
from keras_vit.models.applications import make_constructor
from keras_vit.models.variants import VARIANTS, get_variant
from keras_vit.models.vit import ViT, load_model, load_weights
from keras_vit.preprocessing import preprocess_input

__version__ = "0.1.0"

ViT_Ti16 = make_constructor("ViT_Ti16")
ViT_S16 = make_constructor("ViT_S16")
ViT_S32 = make_constructor("ViT_S32")
ViT_B8 = make_constructor("ViT_B8")
ViT_B16 = make_constructor("ViT_B16")
ViT_B32 = make_constructor("ViT_B32")
ViT_L16 = make_constructor("ViT_L16")
ViT_L32 = make_constructor("ViT_L32")
ViT_H14 = make_constructor("ViT_H14")
R50_ViT_B16 = make_constructor("R50_ViT_B16")
R26_ViT_S32 = make_constructor("R26_ViT_S32")
R50_ViT_L32 = make_constructor("R50_ViT_L32")
R_ViT_Ti16 = make_constructor("R_ViT_Ti16")

__all__ = [
    "AddPositionEmbedding",
    "ClassToken",
    "PatchEmbedding",
    "TransformerBlock",
    "VARIANTS",
    "ViT",
    "get_variant",
    "layers",
    "load_model",
    "load_npz",
    "load_weights",
    "preprocess_input",
    "save_npz",
    "attention_maps",
    "attention_rollout",
    "mean_attention_distance",
    "patch_grid",
    *VARIANTS,
]
