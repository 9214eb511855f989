"""Constructors: `ViT(...)` for any architecture, keras.applications-style `ViT_B16(...)` per variant, `create_model`."""

from __future__ import annotations

import os
from typing import Callable

from keras_vit.models.variants import VARIANTS, variant_name
from keras_vit.options import ARCHITECTURE
from keras_vit.models.vision_transformer import VisionTransformer
from keras_vit.weights import hub, releases, sources
from keras_vit.weights.pipeline import load_weights

#: Arguments a variant fixes: a variant constructor refuses them.
ARCHITECTURE_ARGUMENTS = (*ARCHITECTURE, "variant")

_DOC = """Builds {reference} ({summary}) as a `keras_vit.VisionTransformer`.

    Args:
        image_size: int or (h, w); default: the resolution `weights` was
            trained at when it is a known name (384 for the ImageNet
            fine-tuned files), else 224.
        include_top: with the classification head; else the model outputs the
            pooled representation (`pooling="avg"` or `"max"` pools the patch
            tokens instead).
        weights: None, a path to an original `.npz`, a `.keras` or a
            `.weights.h5` file, or a known name: {known}.
        classes: number of classes of the head.
        name: the model's name (default {default_name!r}).
        head: the stored head's policy when `weights` load: "auto" (keep it
            when it fits `classes`), "new" (a zero head, for fine-tuning) or
            "keep" (`keras_vit.load_weights`).
        **kwargs: further arguments of `keras_vit.VisionTransformer` that do
            not change the variant: classifier, representation_size,
            dropout_rate (default {dropout_rate}, the reference config's),
            attention_dropout_rate, stochastic_depth_rate,
            position_embedding, dynamic_image_size (any image size at call
            time), classifier_activation, include_preprocessing,
            crop_fraction, dtype, ...

    Returns:
        A `keras_vit.VisionTransformer` with `variant={variant!r}`.
    """


def ViT(weights: str | os.PathLike | None = None, head: str = "auto", **kwargs) -> VisionTransformer:
    """Builds a `keras_vit.VisionTransformer` of any architecture and loads `weights` into it.

    Args:
        weights: None (random, with a zero head: predictions are uniform until
            trained), a path to an original `.npz` checkpoint, an HF
            transformers checkpoint (a `save_pretrained` folder, or its
            weights file beside `config.json`), a timm `.safetensors` / `.pth`
            file, a `.keras` or `.weights.h5` file, a known hub checkpoint
            ("google/vit-base-patch16-224", "timm/deit_base_patch16_224.fb_in1k",
            ...: `keras_vit.weights.hub`), or a known name ("imagenet21k", ...)
            when `variant` names a released variant. A
            file that records its architecture (all but `.weights.h5`) gives
            the arguments not passed, its image size and classes included
            (`keras_vit.weights.model_arguments`). Position embeddings are
            resized to this model's grid.
        head: what happens to the stored classification head
            (`keras_vit.load_weights`): "auto" (default) keeps it when it fits
            `classes`, for inference with a checkpoint on its own task, and
            else starts a new zero-initialised one; "new" always starts a new
            one (fine-tuning, as the paper does); "keep" requires it.
        **kwargs: the arguments of `keras_vit.VisionTransformer`.
    """
    if hub.is_hub_name(weights) and not os.path.exists(weights):
        weights = hub.download_checkpoint(weights)
    if weights is not None and sources.records_architecture(weights):
        try:
            kwargs = {**sources.model_arguments(weights, kwargs.get("num_heads")), **kwargs}  # the arguments given override the file's
        except ValueError:
            if not os.fspath(weights).endswith(".npz"):
                raise
            # a reference .npz of a non-square grid cannot tell its image size: the load says what does not fit
    model = VisionTransformer(**kwargs)
    if weights is not None:
        load_weights(model, weights, head=head)
    return model


def make_constructor(name: str) -> Callable[..., VisionTransformer]:
    """The constructor function of a row of `VARIANTS`."""
    variant = VARIANTS[name]

    def constructor(
        image_size: int | tuple[int, int] | None = None,
        include_top: bool = True,
        weights: str | os.PathLike | None = None,
        classes: int = 1000,
        name: str | None = None,
        head: str = "auto",
        **kwargs,
    ) -> VisionTransformer:
        fixed = sorted(set(kwargs) & set(ARCHITECTURE_ARGUMENTS))
        if fixed:
            raise TypeError(
                f"{constructor.__name__}() builds {variant.reference_name} and takes no {', '.join(fixed)}; "
                f"use keras_vit.ViT(...) for another architecture."
            )
        kwargs.setdefault("dropout_rate", variant.dropout_rate)
        return ViT(
            weights=weights,
            head=head,
            image_size=image_size if image_size is not None or "input_shape" in kwargs
            else releases.default_image_size(constructor.__name__, weights),
            include_top=include_top,
            classes=classes,
            name=name or constructor.__name__.lower(),
            variant=constructor.__name__,
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
    constructor.__name__ = constructor.__qualname__ = name
    constructor.__doc__ = _DOC.format(
        reference=variant.reference_name,
        summary=summary,
        known=", ".join(f'"{k}"' for k in releases.known_weights(name)) or "none released",
        default_name=name.lower(),
        variant=name,
        dropout_rate=variant.dropout_rate,
    )
    return constructor


#: One constructor per row of the variant table.
CONSTRUCTORS: dict[str, Callable[..., VisionTransformer]] = {name: make_constructor(name) for name in VARIANTS}
globals().update(CONSTRUCTORS)  # ViT_B16, ... as this module's names


def create_model(name: str, **kwargs) -> VisionTransformer:
    """Builds a model by name: a variant in any spelling ("ViT-B_16", "ViT_B16", "ViT-B/16") or "ViT".

    `create_model("ViT-B_16", image_size=384, weights="imagenet21k", classes=10)`
    is `ViT_B16(image_size=384, weights="imagenet21k", classes=10)`;
    `create_model("ViT", ...)` is `ViT(...)`.
    """
    if name.lower() == "vit":
        return ViT(**kwargs)
    return CONSTRUCTORS[variant_name(name)](**kwargs)
