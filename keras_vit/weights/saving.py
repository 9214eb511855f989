"""`save_checkpoint`: a model's weights written where other libraries' users load them (HF, timm) or as an `.npz`.

Each format holds what its library's ViT computes; what one cannot hold is
refused in one line before anything is written.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import partial

import numpy as np

from keras_vit.preprocessing import REFERENCE_MEAN, REFERENCE_STD
from keras_vit.weights import layout, torch_formats
from keras_vit.weights.pipeline import save_npz

#: The formats of `save_checkpoint`.
CHECKPOINT_FORMATS = ("npz", "hf", "timm")


def save_checkpoint(model, path: str | os.PathLike, format: str = "npz") -> None:
    """Writes a `VisionTransformer`'s weights in another library's format.

    Args:
        model: a `keras_vit.VisionTransformer`.
        path: "npz": the `.npz` file (the released files' layout); "hf": a
            folder, written as transformers' `save_pretrained` writes one
            (`config.json`, `model.safetensors`: `ViTForImageClassification`,
            `ViTModel` without a head, DeiT's `...WithTeacher` with a
            distillation token), which `from_pretrained(path)` loads; "timm":
            a `.safetensors` state dict of timm's `VisionTransformer` (DeiT's
            `VisionTransformerDistilled`; a hybrid's embedding is timm's
            `HybridEmbed` on its ResNetV2), built with `timm_arguments(model)`.
        format: "npz", "hf" or "timm".

    Raises:
        ValueError: the format cannot hold this model (it says what); nothing is written.
    """
    path = os.fspath(path)
    if format not in CHECKPOINT_FORMATS:
        raise ValueError(f"Unknown checkpoint format {format!r}; expected one of {CHECKPOINT_FORMATS}.")
    if not layout.is_vision_transformer(model):
        raise ValueError(f"save_checkpoint writes a VisionTransformer's weights; got a {type(model).__name__}.")
    if format == "npz":
        return save_npz(model, path)
    _check_holds(model, format)
    params = {key: value.astype(np.float32) for key, value in layout.checkpoint_values(model).items()}
    from safetensors.numpy import save_file

    if format == "timm":
        _warn_timm_conventions(model)
        state = torch_formats.timm_state(params, model.num_layers, model.fc_norm)
        save_file(state, path, metadata={"format": "pt"})
        return None
    distilled = model.distillation_token
    heads = ("cls_classifier", "distillation_classifier") if distilled else ("classifier", None)
    config = hf_config(model)
    prefix = config["model_type"] + "." if model.include_top else ""
    state = torch_formats.hf_state(params, model.num_layers, prefix, heads if model.include_top else (None, None))
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, torch_formats.HF_WEIGHTS[0]), metadata={"format": "pt"})
    with open(os.path.join(path, torch_formats.HF_CONFIG), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(path, torch_formats.HF_PREPROCESSOR), "w") as f:
        json.dump(hf_preprocessor_config(model), f, indent=2, sort_keys=True)
    return None


def hf_preprocessor_config(model) -> dict:
    """The `preprocessor_config.json` of transformers' `ViTImageProcessor` that feeds `model` what it expects: a
    resize to its image size and its pixel statistics."""
    height, width = model.image_size
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": height, "width": width},
        "resample": 2,  # bilinear, as keras_vit.preprocessing resizes
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(model.pixel_mean or REFERENCE_MEAN),
        "image_std": list(model.pixel_std or REFERENCE_STD),
    }


def _check_holds(model, format: str) -> None:
    """ValueError naming what `format` has no place for in `model`."""
    library = {"hf": "HF transformers' ViT classes", "timm": "timm's VisionTransformer"}[format]
    cannot = []
    if format == "hf" and model.resnet_layers is not None:
        cannot.append("a ResNet stem (transformers 5 has no ViT hybrid: save it as timm or npz)")
    if model.position_embedding != "learned_1d":
        cannot.append(f"position_embedding={model.position_embedding!r} (only learned 1-D tables)")
    if model.position_embedding_placement != "input":
        cannot.append(f"position_embedding_placement={model.position_embedding_placement!r}")
    if format == "timm" and model.pre_logits is not None:
        cannot.append("a representation (pre-logits) layer")
    if format == "hf":
        if model.classifier != "token" or model.fc_norm:
            cannot.append("average pooling (HF classifies the class token)")
        if model.pre_logits is not None and model.include_top:
            cannot.append("a representation layer under a head (HF's pooler is ViTModel's, without a head)")
        if model.patch_size[0] != model.patch_size[1]:
            cannot.append(f"non-square patches {model.patch_size}")
        if model.distillation_token and model.pre_logits is not None:
            cannot.append("a representation layer beside a distillation token")
    if cannot:
        raise ValueError(f"{library} cannot hold model {model.name!r}: {'; '.join(cannot)}.")


def _warn_timm_conventions(model) -> None:
    differ = []
    if model.approximate_gelu:
        differ.append("the tanh GELU (act_layer='gelu_tanh')")
    if model.layer_norm_epsilon != torch_formats.TIMM_LAYER_NORM_EPSILON:
        differ.append(f"LayerNorm epsilon {model.layer_norm_epsilon}")
    if model.pixel_mean is not None or model.pixel_std is not None:
        differ.append(f"pixel statistics mean {model.pixel_mean}, std {model.pixel_std} (timm's pretrained_cfg)")
    if differ:
        warnings.warn(
            f"A timm state dict does not record {' and '.join(differ)}, in which model {model.name!r} differs from "
            f"timm's defaults: build timm's model with keras_vit.weights.timm_arguments(model) for equal outputs.",
            stacklevel=3,
        )


def timm_arguments(model) -> dict:
    """The arguments of timm's `VisionTransformer` (DeiT's `VisionTransformerDistilled` for a distillation token)
    that compute what `model` computes, for the state dict `save_checkpoint(model, path, "timm")` writes."""
    _check_holds(model, "timm")
    arguments = dict(
        img_size=tuple(model.image_size),
        patch_size=tuple(model.patch_size),
        in_chans=model.channels,
        num_classes=model.classes if model.include_top else 0,
        embed_dim=model.hidden_size,
        depth=model.num_layers,
        num_heads=model.num_heads,
        mlp_ratio=model.mlp_dim / model.hidden_size,
        class_token=model.classifier == "token",
        global_pool="token" if model.classifier == "token" else "avg",
        fc_norm=model.fc_norm,
    )
    if model.approximate_gelu:
        arguments["act_layer"] = "gelu_tanh"
    if model.layer_norm_epsilon != torch_formats.TIMM_LAYER_NORM_EPSILON:
        import torch

        arguments["norm_layer"] = partial(torch.nn.LayerNorm, eps=model.layer_norm_epsilon)
    if model.resnet_layers is not None:
        arguments["embed_layer"] = partial(_timm_hybrid_embedding, model.resnet_layers, model.resnet_width)
    return arguments


def _timm_hybrid_embedding(resnet_layers: tuple[int, ...], resnet_width: int, **arguments):
    """timm's `HybridEmbed` on the ResNetV2 its `vit_*_r*` models build (`_resnetv2`, from public parts): the stem
    alone for `()`, else the stem and stages, with weight-standardised SAME convolutions."""
    from timm.layers import StdConv2dSame
    from timm.models.resnetv2 import ResNetV2, create_resnetv2_stem
    from timm.models.vision_transformer_hybrid import HybridEmbed

    conv = partial(StdConv2dSame, eps=1e-8)
    if resnet_layers:
        backbone = ResNetV2(layers=resnet_layers, num_classes=0, global_pool="", in_chans=arguments["in_chans"],
                            preact=False, stem_type="same", conv_layer=conv, width_factor=resnet_width)
    else:
        backbone = create_resnetv2_stem(arguments["in_chans"], 64 * resnet_width, stem_type="same", preact=False,
                                        conv_layer=conv)
    return HybridEmbed(backbone=backbone, **arguments)


def hf_config(model) -> dict:
    """The `config.json` of transformers' ViT (or DeiT, with a distillation token) that computes what `model` does."""
    _check_holds(model, "hf")
    distilled = model.distillation_token
    if model.include_top:
        architecture = "DeiTForImageClassificationWithTeacher" if distilled else "ViTForImageClassification"
    else:
        architecture = "DeiTModel" if distilled else "ViTModel"
    height, width = model.image_size
    config = {
        "architectures": [architecture],
        "model_type": "deit" if distilled else "vit",
        "hidden_size": model.hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.mlp_dim,
        "hidden_act": torch_formats.HF_TANH_GELU[0] if model.approximate_gelu else "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": model.layer_norm_epsilon,
        "image_size": height if height == width else [height, width],
        "patch_size": model.patch_size[0],
        "encoder_stride": model.patch_size[0],
        "num_channels": model.channels,
        "qkv_bias": True,
        "dtype": "float32",
    }
    if model.include_top:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(model.classes)}
    if model.pre_logits is not None:
        config.update(pooler_output_size=model.representation_size, pooler_act="tanh")
    return config
