"""`keras_vit.ViT`: the Vision Transformer and its ResNet hybrids as a functional `keras.Model`."""

from __future__ import annotations

import os

import numpy as np
import keras

from keras_vit import checkpoints, weights as known_weights
from keras_vit.layers import (
    AddPositionEmbedding,
    ClassifierHead,
    ClassToken,
    PatchEmbedding,
    ResidualUnit,
    SequencePooling,
    StdConv2D,
    TransformerBlock,
)
from keras_vit.layers.pooling import CLASSIFIERS
from keras_vit.layers.position_embedding import POSITION_EMBEDDINGS
from keras_vit.layers.residual_unit import group_norm
from keras_vit.layers.transformer_block import LAYER_NORM_EPSILON
from keras_vit.models.variants import find_variant
from keras_vit.preprocessing import preprocessing_layer
from keras_vit.utils import to_pair


def ViT(
    image_size: int | tuple[int, int] = 224,
    patch_size: int | tuple[int, int] = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    num_layers: int = 12,
    resnet_layers: tuple[int, ...] | None = None,
    resnet_width: int = 1,
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    classes: int = 1000,
    classifier: str = "token",
    representation_size: int | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    stochastic_depth_rate: float = 0.0,
    position_embedding: str = "learned_1d",
    position_embedding_resize: str = "reference",
    classifier_activation: str | None = None,
    include_preprocessing: bool = False,
    channels: int = 3,
    name: str = "vit",
) -> keras.Model:
    """Builds a Vision Transformer (Dosovitskiy et al., ICLR 2021).

    The image is cut into `patch_size` patches (for hybrids: the ResNet's
    feature map), each projected to `hidden_size`; a class token is prepended
    (`classifier="token"`), position embeddings are added, `num_layers`
    pre-LN Transformer blocks and a final LayerNorm run, and the class token's
    output (or the mean of all tokens, `classifier="gap"`) goes through the
    optional tanh `representation_size` layer and the classification head.

    Args:
        image_size: input height and width (int or (h, w)); each must divide by
            the patch size (hybrids: the ResNet's feature map must).
        patch_size, hidden_size, mlp_dim, num_heads, num_layers: the encoder.
        resnet_layers: hybrid only: units per ResNet stage, e.g. (3, 4, 9);
            `()` is the stem alone; None (default) is a plain ViT.
        resnet_width: hybrid only: ResNet width factor (stem has 64 * width).
        include_top: with the head; else the model outputs the pooled
            representation [batch, representation_size or hidden_size].
        weights: None (random), a path to an original `.npz` checkpoint, a
            `.keras` or `.weights.h5` file, or a known name ("imagenet21k",
            "imagenet21k+imagenet2012", "augreg-i21k",
            "augreg-i21k+imagenet2012") for a released variant. Position
            embeddings are resized to this model's grid; a head of another
            number of classes is replaced by a new zero-initialised one.
        classes: number of classes of the head.
        classifier: "token" or "gap".
        representation_size: width of the tanh "pre-logits" layer, or None.
        dropout_rate, attention_dropout_rate, stochastic_depth_rate:
            regularisation; stochastic depth grows linearly from 0 in the
            first block to this rate in the last.
        position_embedding: "learned_1d" (default), "learned_2d", "relative"
            or "none" (the paper's appendix D.4 ablation).
        position_embedding_resize: how position embeddings of another grid are
            resized on load: "reference" (scipy zoom, order 1) or "bilinear",
            "bicubic", "nearest".
        classifier_activation: activation of the head's output; None gives
            logits, like the reference.
        include_preprocessing: take uint8-range [0, 255] images and scale them
            to [-1, 1] inside the model.
        channels: input channels.
        name: the model's name.

    Returns:
        A `keras.Model` from [batch, h, w, channels] images to [batch, classes]
        (float32, also under mixed precision).
    """
    image_size = to_pair(image_size, "image_size")
    patch_size = to_pair(patch_size, "patch_size")
    _validate(locals())

    inputs = keras.Input((*image_size, channels), name="images")
    x = preprocessing_layer()(inputs) if include_preprocessing else inputs
    if resnet_layers is not None:
        x = _resnet(x, tuple(resnet_layers), resnet_width)
    feature_size = tuple(x.shape[1:3])
    if feature_size[0] % patch_size[0] or feature_size[1] % patch_size[1]:
        source = "image size" if resnet_layers is None else f"ResNet feature map {feature_size} of the image size"
        raise ValueError(f"The {source} {image_size} is not divisible by the patch size {patch_size}.")
    grid = (feature_size[0] // patch_size[0], feature_size[1] // patch_size[1])

    x = PatchEmbedding(patch_size, hidden_size, name="embedding")(x)
    if classifier == "token":
        x = ClassToken(name="cls")(x)
    if position_embedding in ("learned_1d", "learned_2d"):
        x = AddPositionEmbedding(
            grid,
            num_prefix_tokens=int(classifier == "token"),
            kind=position_embedding,
            resize_method=position_embedding_resize,
            name="posembed_input",
        )(x)
    x = keras.layers.Dropout(dropout_rate, name="posembed_dropout")(x)
    for i, depth_rate in enumerate(np.linspace(0.0, stochastic_depth_rate, num_layers)):
        x = TransformerBlock(
            num_heads,
            mlp_dim,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            stochastic_depth_rate=float(depth_rate),
            relative_positions=position_embedding == "relative",
            resize_method=position_embedding_resize,
            name=f"encoderblock_{i}",
        )(x)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")(x)
    x = SequencePooling(classifier, name="pool")(x)
    if representation_size is not None:
        x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits")(x)
    if include_top:
        x = ClassifierHead(classes, name="head")(x)
        x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, x, name=name)

    if weights is not None:
        architecture = dict(
            patch_size=patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            num_layers=num_layers,
            resnet_layers=None if resnet_layers is None else tuple(resnet_layers),
        )
        load_weights(model, weights, variant_name=find_variant(architecture))
    return model


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file of a keras_vit model for inference, evaluation or export.

    The training configuration is not restored (`compile=False`): a file
    saved by `training.train` refers to its learning-rate schedule, which
    inference does not need. Loads with `safe_mode=True`.
    """
    if not os.path.exists(path):
        raise ValueError(f"Model file {os.fspath(path)!r} does not exist.")
    return keras.models.load_model(path, compile=False, safe_mode=True)


def load_weights(model: keras.Model, weights: str | os.PathLike, variant_name: str | None = None) -> None:
    """Loads `.npz`, `.keras` or `.weights.h5` weights, or a known name of `variant_name`, into a model."""
    path = os.fspath(weights)
    if not os.path.exists(path):
        if path.endswith((".npz", ".keras", ".h5")):
            raise FileNotFoundError(f"Weights file not found: {path!r}.")
        path = known_weights.download_weights(variant_name, path)
    if path.endswith(".keras") or path.endswith(".h5"):
        model.load_weights(path)
    else:
        checkpoints.load_npz(model, path)


def _resnet(x, stage_units: tuple[int, ...], width_factor: int):
    """The hybrids' ResNet: a 4x-downsampling stem, then bottleneck stages (the first strides 1, the rest 2)."""
    width = 64 * width_factor
    x = StdConv2D(width, 7, strides=2, padding="same", use_bias=False, name="conv_root")(x)
    x = group_norm("gn_root", None)(x)
    x = keras.layers.ReLU(name="relu_root")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool_root")(x)
    for stage, units in enumerate(stage_units):
        for unit in range(units):
            strides = 2 if stage > 0 and unit == 0 else 1
            x = ResidualUnit(width * 2**stage, strides=strides, name=f"block{stage + 1}_unit{unit + 1}")(x)
    return x


def _validate(args: dict) -> None:
    if args["classifier"] not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {args['classifier']!r}; expected one of {CLASSIFIERS}.")
    if args["position_embedding"] not in POSITION_EMBEDDINGS:
        raise ValueError(
            f"Unknown position_embedding {args['position_embedding']!r}; expected one of {POSITION_EMBEDDINGS}."
        )
    if args["hidden_size"] % args["num_heads"]:
        raise ValueError(f"hidden_size {args['hidden_size']} is not divisible by num_heads {args['num_heads']}.")
    if args["include_top"] and args["classes"] < 1:
        raise ValueError(f"classes must be positive with include_top=True, got {args['classes']}.")
    for key in ("patch_size", "image_size"):
        if min(args[key]) < 1:
            raise ValueError(f"{key} must be positive, got {args[key]}.")
