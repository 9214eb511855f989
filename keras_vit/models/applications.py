"""keras.applications-style constructors (`ViT_B16`, `R50_ViT_B16`, ...), one per row of the variant table."""

from __future__ import annotations

import os
from typing import Callable

import keras

from keras_vit.models.variants import VARIANTS
from keras_vit.models.vit import ViT

_DOC = """Builds {reference} ({summary}).

    Args:
        image_size: int or (h, w); default 224.
        include_top: with the classification head; else the model outputs the
            pooled representation.
        weights: None, a path to an original `.npz`, a `.keras` or a
            `.weights.h5` file, or a known name: {known}.
        classes: number of classes of the head.
        classifier: "token" or "gap".
        representation_size: width of the tanh pre-logits layer, or None.
        dropout_rate, attention_dropout_rate, stochastic_depth_rate: regularisation.
        position_embedding: "learned_1d", "learned_2d", "relative" or "none".
        classifier_activation: None (logits) or an activation such as "softmax".
        include_preprocessing: scale [0, 255] inputs to [-1, 1] inside the model.
        name: the model's name (default {default_name!r}).
        **kwargs: further arguments of `keras_vit.ViT`.

    Returns:
        A `keras.Model`; see `keras_vit.ViT`.
    """


def make_constructor(variant_name: str) -> Callable[..., keras.Model]:
    """Returns the constructor function of a row of `VARIANTS`."""
    from keras_vit.weights import known_weights

    variant = VARIANTS[variant_name]

    def constructor(
        image_size: int | tuple[int, int] = 224,
        include_top: bool = True,
        weights: str | os.PathLike | None = None,
        classes: int = 1000,
        classifier: str = "token",
        representation_size: int | None = None,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        stochastic_depth_rate: float = 0.0,
        position_embedding: str = "learned_1d",
        classifier_activation: str | None = None,
        include_preprocessing: bool = False,
        name: str | None = None,
        **kwargs,
    ) -> keras.Model:
        return ViT(
            image_size=image_size,
            include_top=include_top,
            weights=weights,
            classes=classes,
            classifier=classifier,
            representation_size=representation_size,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            stochastic_depth_rate=stochastic_depth_rate,
            position_embedding=position_embedding,
            classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing,
            name=name or variant_name.lower(),
            **variant.config,
            **kwargs,
        )

    config = variant.config
    summary = (
        f"hidden {config['hidden_size']}, MLP {config['mlp_dim']}, {config['num_heads']} heads, "
        f"{config['num_layers']} layers, patch {config['patch_size']}"
    )
    if variant.resnet_layers is not None:
        summary += f", ResNet stages {variant.resnet_layers or '(stem only)'}"
    constructor.__name__ = constructor.__qualname__ = variant_name
    constructor.__doc__ = _DOC.format(
        reference=variant.reference_name,
        summary=summary,
        known=", ".join(f'"{k}"' for k in known_weights(variant_name)) or "none released",
        default_name=variant_name.lower(),
    )
    return constructor
