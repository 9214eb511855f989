"""The canonical layout: the reference checkpoint keys of a ViT, and the variable each names in a keras_vit model.

Every source of weights is read into this layout (`keras_vit.weights.sources`):
the keys of google-research/vision_transformer's Linen models
(`Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel`, ...), with the
position embedding at `Transformer/posembed_input/pos_embedding`, class-token
row included. Models that are not ViTs (`keras_vit.ResNet`,
`keras_vit.MaskedPatchPrediction`) have no reference layout: their keys are
their variables' Keras paths.
"""

from __future__ import annotations

import math

import numpy as np
import keras

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.lora import lora_layers
from keras_vit.layers.residual_unit import resnet_stride
from keras_vit import position_embeddings
from keras_vit.weights import formats

# Encoder block sub-layers and their (Linen) names in the canonical layout.
_BLOCK = {
    "attention_norm": "LayerNorm_0",
    "attention": "MultiHeadDotProductAttention_0",
    "mlp_norm": "LayerNorm_1",
    "mlp_dense_1": "MlpBlock_0/Dense_0",
    "mlp_dense_2": "MlpBlock_0/Dense_1",
}
_NORM = {"gamma": "scale", "beta": "bias"}
PATCH_EMBEDDING = "embedding/kernel"
#: Keys a checkpoint may hold that a model may legitimately not use (a new task's head, no representation layer).
HEAD = "head/"
PRE_LOGITS = "pre_logits/"
#: keras_vit's keys beside the reference's for what it has no name for: DeiT's distillation token and its head.
DISTILLATION_TOKEN = "dist"
HEAD_DIST = "head_dist/"
#: The classification heads, which the head policy (`keras_vit.options.HEAD_POLICIES`) loads or starts anew.
HEADS = (HEAD, HEAD_DIST)
POSITION_EMBEDDING = "Transformer/posembed_input/"
#: Inside `Transformer/encoderblock_{i}/`: the block's own table (`position_embedding_placement="every_layer"`).
BLOCK_POSITION_EMBEDDING = "posembed/"
RELATIVE = "/relative_embedding"
#: The patch grid, written into `.npz` files beside the reference's keys where the reference cannot tell it.
NPZ_GRID_KEY = "keras_vit/grid_size"
#: Model options the reference's keys cannot tell, written beside them as `keras_vit/<option>` where they differ
#: from the default: a table shared by every block (whose keys are the input table's), and the conventions of
#: other libraries' checkpoints (`keras_vit.options.CONVENTIONS`).
NPZ_OPTIONS = {
    "position_embedding_placement": "input",
    "layer_norm_epsilon": 1e-6,
    "approximate_gelu": True,
    "fc_norm": False,
    "pixel_mean": None,
    "pixel_std": None,
}


def npz_option_key(option: str) -> str:
    """The `.npz` key of a model option in `NPZ_OPTIONS`."""
    return f"keras_vit/{option}"


def is_vision_transformer(model) -> bool:
    """True for a `VisionTransformer` (the model has encoder blocks and a patch embedding)."""
    return hasattr(model, "encoder_blocks") and hasattr(model, "embedding")


def model_variables(model) -> dict[str, keras.Variable]:
    """Canonical key -> variable: the reference keys for a ViT, the Keras variable paths for any other model."""
    if is_vision_transformer(model):
        return checkpoint_variables(model)
    return {variable.path: variable for variable in model.weights}


def checkpoint_variables(model) -> dict[str, keras.Variable]:
    """Maps each reference checkpoint key to the variable of a `VisionTransformer` that holds it."""
    out: dict[str, keras.Variable] = {}
    if model.conv_root is not None:
        out.update(_leaf_variables(model.conv_root, "conv_root"))
        out.update(_leaf_variables(model.gn_root, "gn_root"))
    for stage, units in enumerate(model.resnet_stages):
        for index, unit in enumerate(units):
            for sub in ("conv1", "gn1", "conv2", "gn2", "conv3", "gn3", "conv_proj", "gn_proj"):
                if getattr(unit, sub) is not None:
                    out.update(_leaf_variables(getattr(unit, sub), f"block{stage + 1}/unit{index + 1}/{sub}"))
    out.update(_leaf_variables(model.embedding.projection, "embedding"))
    if model.class_token is not None:
        out["cls"] = model.class_token.cls
    if model.dist_token is not None:
        out[DISTILLATION_TOKEN] = model.dist_token.cls
    if model.posembed_input is not None:
        out.update({POSITION_EMBEDDING + v.name: v for v in model.posembed_input.weights})
    for depth, block in enumerate(model.encoder_blocks):
        if model.posembed_input is None and model.block_position_embeddings:  # a table per block
            table = model.block_position_embeddings[depth]
            out.update({f"Transformer/encoderblock_{depth}/{BLOCK_POSITION_EMBEDDING}{v.name}": v for v in table.weights})
        for name, reference in _BLOCK.items():
            out.update(_leaf_variables(getattr(block, name), f"Transformer/encoderblock_{depth}/{reference}"))
    out.update(_leaf_variables(model.encoder_norm, "Transformer/encoder_norm"))
    if model.pre_logits is not None:
        out.update(_leaf_variables(model.pre_logits, PRE_LOGITS.rstrip("/")))
    for head, prefix in ((model.head, HEAD), (model.head_dist, HEAD_DIST)):
        if head is not None:
            out.update(_leaf_variables(head, prefix.rstrip("/")))
    return out


def _leaf_variables(layer: keras.layers.Layer, prefix: str) -> dict[str, keras.Variable]:
    if isinstance(layer, MultiHeadSelfAttention):
        out = {}
        for name in ("query", "key", "value", "out"):
            out.update(_leaf_variables(getattr(layer, name), f"{prefix}/{name}"))
        if layer.relative_positions:
            out[prefix + RELATIVE] = layer.relative_embedding
        return out
    return {f"{prefix}/{_NORM.get(v.name, v.name)}": v for v in layer.weights if not v.name.startswith("lora_")}


def checkpoint_values(model) -> dict[str, np.ndarray]:
    """`checkpoint_variables`' values, each LoRA projection's kernel with its factors merged (what a file holds)."""
    merged = {id(layer._kernel): layer.kernel for layer in lora_layers(model)}
    return {key: keras.ops.convert_to_numpy(merged.get(id(variable), variable))
            for key, variable in checkpoint_variables(model).items()}


def released_name(key: str) -> str:
    """The released files' (pre-Linen) name of a canonical key."""
    parts = key.split("/")
    if len(parts) > 2 and parts[1].startswith("encoderblock_"):
        parts[2] = formats.PRE_LINEN_BLOCK_NAMES.get(parts[2], parts[2])
    return "/".join(parts)


def is_position_embedding(key: str) -> bool:
    """Whether a canonical key is a learned position-embedding table (at the input, shared, or a block's own)."""
    return key.startswith(POSITION_EMBEDDING) or f"/{BLOCK_POSITION_EMBEDDING}" in key


def block_of(key: str) -> int:
    """The encoder block a canonical `Transformer/encoderblock_{i}/...` key belongs to."""
    return int(key.split("/")[1].rsplit("_", 1)[1])


def architecture(params: dict[str, np.ndarray], grid: tuple[int, int] | None = None) -> dict:
    """The `VisionTransformer` arguments of a checkpoint in the canonical layout, read from its keys and shapes.

    Returns image_size (the patch grid, `grid` or else the grid of its
    position tables, times the input pixels per token), patch_size,
    hidden_size, mlp_dim, num_heads, num_layers, resnet_layers, resnet_width,
    classifier, representation_size, position_embedding,
    position_embedding_placement ("input" or, with a table per block,
    "every_layer"; a shared table is recorded by `NPZ_PLACEMENT_KEY`) and,
    when it has a head, classes.

    Raises:
        KeyError: a key every ViT checkpoint has is missing.
        ValueError: the grid is not given and the position embedding's is not square.
    """
    patch_h, patch_w, _, hidden = params["embedding/kernel"].shape
    attention = "Transformer/encoderblock_0/" + _BLOCK["attention"]
    found = dict(
        patch_size=(patch_h, patch_w),
        hidden_size=hidden,
        mlp_dim=params["Transformer/encoderblock_0/" + _BLOCK["mlp_dense_1"] + "/kernel"].shape[1],
        num_heads=params[attention + "/query/kernel"].shape[1],
        num_layers=len({k.split("/")[1] for k in params if k.startswith("Transformer/encoderblock_")}),
        classifier="token" if "cls" in params else "gap",
        representation_size=params[PRE_LOGITS + "kernel"].shape[1] if PRE_LOGITS + "kernel" in params else None,
    )
    if DISTILLATION_TOKEN in params:
        found["distillation_token"] = True
    stride = 1
    if "conv_root/kernel" in params:
        stages = sorted({k.split("/")[0] for k in params if k.startswith("block")}, key=lambda b: int(b[5:]))
        units = [len({k.split("/")[1] for k in params if k.startswith(stage + "/")}) for stage in stages]
        found.update(resnet_layers=tuple(units), resnet_width=params["conv_root/kernel"].shape[-1] // 64)
        stride = resnet_stride(units)
    tables = {key.rsplit("/", 1)[1]: value for key, value in params.items()
              if key.startswith((POSITION_EMBEDDING, f"Transformer/encoderblock_0/{BLOCK_POSITION_EMBEDDING}"))}
    found["position_embedding"] = position_embeddings.detect(
        tables, [key[len(attention) + 1:] for key in params if key.startswith(attention + "/")]
    )
    found["position_embedding_placement"] = "input"
    if any(key.startswith(f"Transformer/encoderblock_0/{BLOCK_POSITION_EMBEDDING}") for key in params):
        found["position_embedding_placement"] = "every_layer"
    if grid is None and "row_embedding" in tables:
        grid = (len(tables["row_embedding"]), len(tables["column_embedding"]))
    if grid is None:
        if "pos_embedding" not in tables:
            raise KeyError(formats.POSITION_EMBEDDING)
        tokens = tables["pos_embedding"].shape[1] - int(found["classifier"] == "token") - int(DISTILLATION_TOKEN in params)
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"its {tokens} position embeddings are not a square grid")
        grid = (side, side)
    found["image_size"] = (grid[0] * patch_h * stride, grid[1] * patch_w * stride)
    if HEAD + "kernel" in params:
        found["classes"] = params[HEAD + "kernel"].shape[1]
    return found
