"""Keras 3 layers of the Vision Transformer and its hybrid ResNet stem."""

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.class_token import ClassToken
from keras_vit.layers.classifier_head import ClassifierHead
from keras_vit.layers.corrupt_patches import CorruptPatches
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.pooling import SequencePooling
from keras_vit.layers.position_embedding import AddPositionEmbedding
from keras_vit.layers.residual_unit import ResidualUnit
from keras_vit.layers.std_conv import StdConv2D
from keras_vit.layers.stochastic_depth import StochasticDepth
from keras_vit.layers.stride_alignment import StrideAlignment
from keras_vit.layers.transformer_block import TransformerBlock

__all__ = [
    "AddPositionEmbedding",
    "ClassToken",
    "ClassifierHead",
    "CorruptPatches",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "ResidualUnit",
    "SequencePooling",
    "StdConv2D",
    "StochasticDepth",
    "StrideAlignment",
    "TransformerBlock",
]
