"""Opening saved models: `.keras` files as they are, or a model built for an `.npz` checkpoint or a known release."""

from __future__ import annotations

import os

import keras

from keras_vit.models.constructors import ViT, create_model
from keras_vit.models.variants import variant_name
from keras_vit.models.vision_transformer import VisionTransformer
from keras_vit.weights import hub, releases, sources, torch_formats
from keras_vit.weights.pipeline import load_weights


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file of a keras_vit model for inference, evaluation or export.

    The training configuration is not restored (`compile=False`): inference
    needs no optimizer. Loads with `safe_mode=True`. `keras.models.load_model`
    works as well, after `import keras_vit`.
    """
    if not os.path.exists(path):
        raise ValueError(f"Model file {os.fspath(path)!r} does not exist.")
    return keras.models.load_model(path, compile=False, safe_mode=True)


def open_model(
    source: str | os.PathLike, variant: str | None = None, image_size: int | tuple[int, int] | None = None
) -> keras.Model:
    """A model from a `.keras` file, an original `.npz` checkpoint, an HF or timm checkpoint, a known hub
    checkpoint, or a known weights name of `variant`.

    A `.npz`, HF or timm checkpoint gives its own architecture, image size
    and classes (with `variant`, the model is that variant); a known name
    ("imagenet21k", ...) needs `variant` and downloads the release; a hub name
    ("google/vit-base-patch16-224") downloads that checkpoint. `image_size` overrides the
    file's resolution (position embeddings are resized, as a model with
    `dynamic_image_size` resizes them when called at that size).
    """
    path = os.fspath(source)
    if hub.is_hub_name(path) and not os.path.exists(path):
        path = hub.download_checkpoint(path)
    if torch_formats.is_torch_checkpoint(path):
        return ViT(weights=path, **({} if image_size is None else {"image_size": image_size}))
    if path.endswith(".keras"):
        model = load_model(path)
        return model if image_size is None else _at_image_size(model, path, image_size)
    if not path.endswith(".npz"):
        if os.path.exists(path) or variant is None:
            raise ValueError(
                f"Cannot open {path!r}: expected a .keras file, an original .npz checkpoint, an HF or timm checkpoint, "
                f"a known hub checkpoint, or a known weights name with its variant (e.g. --model imagenet21k "
                f"--variant ViT_B16)."
            )
        path = releases.download_weights(variant_name(variant), path)
    found = sources.npz_architecture(path)
    if image_size is not None:
        found["image_size"] = image_size
    if variant is not None:
        options = {key: found[key] for key in ("image_size", "classes", "classifier", "representation_size") if key in found}
        return create_model(variant, weights=path, **options)
    return ViT(weights=path, **found)


def _at_image_size(model: keras.Model, path: str, image_size: int | tuple[int, int]) -> keras.Model:
    """The VisionTransformer of a `.keras` file built at `image_size`, its weights loaded with position embeddings
    resized (the head kept)."""
    if type(model) is not VisionTransformer:
        raise ValueError(f"{path} holds a {type(model).__name__}; another image size applies to a VisionTransformer.")
    resized = VisionTransformer.from_config({**model.get_config(), "image_size": image_size})
    load_weights(resized, path, head="keep")
    return resized
