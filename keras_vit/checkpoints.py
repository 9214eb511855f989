"""Original checkpoints: the .npz files of google-research/vision_transformer and AugReg.

A checkpoint is an `np.savez` archive whose keys are '/'-joined parameter
paths (`Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`, ...). `read_npz`
brings every released layout (vit_jax, AugReg, Linen names, `opt/target/`,
big_vision; see `keras_vit.checkpoint_formats`) to one canonical layout,
`checkpoint_variables` maps its keys to the variables of a keras_vit model,
and `load_npz` / `save_npz` move weights through that map. `save_npz` writes
the released files' layout.

Loading follows the reference's fine-tuning rules (`checkpoint.py`,
`load_pretrained`): the head is kept when its shape fits the model's classes
and is otherwise left zero-initialised (a new task); `pre_logits` is dropped
when the model has no representation layer; position embeddings are resized to
the model's grid. Every other variable must be present with its exact shape.

Where the grid is not square, or the model has relative positions, files
written by `save_npz` also hold `keras_vit/grid_size`, the patch grid the
weights were trained on (the reference's files are square and never need it):
a non-square grid is then resized rather than guessed, and a relative
position table is refused on another grid. Square grids give files exactly
in the reference's layout.
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import keras

from keras_vit import checkpoint_formats, layers as vit_layers
from keras_vit.models.resnet_stem import resnet_stride

# Encoder block sub-layers and their (Linen) names in the canonical layout of `keras_vit.checkpoint_formats`.
_BLOCK = {
    "attention_norm": "LayerNorm_0",
    "attention": "MultiHeadDotProductAttention_0",
    "mlp_norm": "LayerNorm_1",
    "mlp_dense_1": "MlpBlock_0/Dense_0",
    "mlp_dense_2": "MlpBlock_0/Dense_1",
}
_NORM = {"gamma": "scale", "beta": "bias"}
# Keys a checkpoint may hold that a model may legitimately not use.
_DROPPABLE_PREFIXES = ("pre_logits/", "head/")
_POSITION_EMBEDDING = "Transformer/posembed_input/"
_RELATIVE = "/relative_embedding"
#: The patch grid, written by `save_npz` beside the reference's keys.
GRID_KEY = "keras_vit/grid_size"


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
    if model.posembed_input is not None:
        out.update({_POSITION_EMBEDDING + v.name: v for v in model.posembed_input.weights})
    for depth, block in enumerate(model.encoder_blocks):
        for name, reference in _BLOCK.items():
            out.update(_leaf_variables(getattr(block, name), f"Transformer/encoderblock_{depth}/{reference}"))
    out.update(_leaf_variables(model.encoder_norm, "Transformer/encoder_norm"))
    if model.pre_logits is not None:
        out.update(_leaf_variables(model.pre_logits, "pre_logits"))
    if model.head is not None:
        out.update(_leaf_variables(model.head, "head"))
    return out


def _leaf_variables(layer: keras.layers.Layer, prefix: str) -> dict[str, keras.Variable]:
    if isinstance(layer, vit_layers.MultiHeadSelfAttention):
        out = {}
        for name in ("query", "key", "value", "out"):
            out.update(_leaf_variables(getattr(layer, name), f"{prefix}/{name}"))
        if layer.relative_positions:
            out[f"{prefix}/relative_embedding"] = layer.relative_embedding
        return out
    return {f"{prefix}/{_NORM.get(v.name, v.name)}": v for v in layer.weights}


def read_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(a checkpoint of any released layout in the canonical one, canonical key -> key in the file).

    A missing file raises FileNotFoundError, a corrupt one a ValueError naming it.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            params = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"Could not read checkpoint {os.fspath(path)!r} as an .npz archive: {error}") from error
    try:
        return checkpoint_formats.normalize(params)
    except ValueError as error:
        raise ValueError(f"Checkpoint {os.fspath(path)!r}: {error}") from None


def npz_architecture(path: str | os.PathLike) -> dict:
    """The `VisionTransformer` arguments of an original checkpoint, read from its keys and shapes.

    Returns image_size (the square grid of its position embedding times the
    input pixels per token), patch_size, hidden_size, mlp_dim, num_heads,
    num_layers, resnet_layers, resnet_width, classifier, representation_size
    and, when it has a head, classes.
    """
    params, _ = read_npz(path)
    try:
        patch_h, patch_w, _, hidden = params["embedding/kernel"].shape
        attention = "Transformer/encoderblock_0/" + _BLOCK["attention"]
        architecture = dict(
            patch_size=(patch_h, patch_w),
            hidden_size=hidden,
            mlp_dim=params["Transformer/encoderblock_0/" + _BLOCK["mlp_dense_1"] + "/kernel"].shape[1],
            num_heads=params[attention + "/query/kernel"].shape[1],
            num_layers=len({k.split("/")[1] for k in params if k.startswith("Transformer/encoderblock_")}),
            classifier="token" if "cls" in params else "gap",
            representation_size=params["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in params else None,
        )
        stride = 1
        if "conv_root/kernel" in params:
            stages = sorted({k.split("/")[0] for k in params if k.startswith("block")}, key=lambda b: int(b[5:]))
            units = [len({k.split("/")[1] for k in params if k.startswith(stage + "/")}) for stage in stages]
            architecture.update(resnet_layers=tuple(units), resnet_width=params["conv_root/kernel"].shape[-1] // 64)
            stride = resnet_stride(units)
        tokens = params[_POSITION_EMBEDDING + "pos_embedding"].shape[1] - int(architecture["classifier"] == "token")
    except KeyError as error:
        raise ValueError(f"Checkpoint {os.fspath(path)!r} lacks {error}, which every ViT checkpoint has.") from None
    if GRID_KEY in params:
        grid = tuple(int(g) for g in params[GRID_KEY])
    else:
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"Checkpoint {os.fspath(path)!r} has {tokens} position embeddings: not a square grid.")
        grid = (side, side)
    architecture["image_size"] = (grid[0] * patch_h * stride, grid[1] * patch_w * stride)
    if "head/kernel" in params:
        architecture["classes"] = params["head/kernel"].shape[1]
    return architecture


def load_npz(model, path: str | os.PathLike) -> None:
    """Loads an original .npz checkpoint into a `VisionTransformer`, in place.

    The head follows `keras_vit.loading`'s policy: kept when it fits, else new.

    Raises:
        ValueError: the file is unreadable, or a key is missing, unexpected or
            of the wrong shape (the message names the key and both shapes).
            Nothing is assigned unless the whole checkpoint fits.
    """
    params, names = read_npz(path)
    stored_grid = tuple(int(g) for g in params.pop(GRID_KEY)) if GRID_KEY in params else None
    variables = checkpoint_variables(model)
    problems = []
    missing = [k for k in variables if k not in params and not k.startswith("head/")]
    problems += [f"missing key {_released_name(k)!r} (expected shape {tuple(variables[k].shape)})" for k in missing]
    extra = [k for k in params if k not in variables and not k.startswith(_DROPPABLE_PREFIXES)]
    problems += [f"unexpected key {names[k]!r} (shape {params[k].shape}) that the model has no place for" for k in extra]

    from keras_vit.loading import keep_head as head_policy

    head_keys = [k for k in variables if k.startswith("head/")]
    stored_head = [params[k].shape for k in head_keys if k in params]
    keep_head = bool(head_keys) and len(stored_head) == len(head_keys) and head_policy(model, stored_head)
    assignments = []
    for key, variable in variables.items():
        if key not in params or (key in head_keys and not keep_head):
            continue
        value, expected = params[key], tuple(variable.shape)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            problems.append(f"key {names[key]!r} holds NaN or Inf values")
            continue
        if key.endswith(_RELATIVE):
            try:
                _attention_of(model, key).check_relative_embedding(value.shape, stored_grid)
            except ValueError as error:
                problems.append(str(error))
                continue
        if key.startswith(_POSITION_EMBEDDING) or value.shape == expected:
            assignments.append((key, variable, value))  # position embeddings are resized by their layer below
        elif value.size == np.prod(expected) and value.squeeze().shape == tuple(d for d in expected if d != 1):
            assignments.append((key, variable, value.reshape(expected)))  # GroupNorm (1, 1, 1, C) -> (C,)
        else:
            problems.append(f"key {names[key]!r}: expected shape {expected}, found {value.shape}")
    if problems:
        raise ValueError(f"Checkpoint {os.fspath(path)!r} does not fit model {model.name!r}: " + "; ".join(problems))

    position = [a for a in assignments if a[0].startswith(_POSITION_EMBEDDING)]
    if position:
        try:
            model.posembed_input.assign_embeddings([value for _, _, value in position], stored_grid)
        except ValueError as error:
            raise ValueError(f"Checkpoint {os.fspath(path)!r} does not fit model {model.name!r}: {error}") from error
    for key, variable, value in assignments:
        if not key.startswith(_POSITION_EMBEDDING):
            variable.assign(np.asarray(value, dtype=variable.dtype))


def _attention_of(model, key: str):
    """The attention layer of the encoder block a checkpoint key names."""
    depth = int(key.split("/")[1].rsplit("_", 1)[1])
    return model.encoder_blocks[depth].attention


def _released_name(key: str) -> str:
    """The released files' (pre-Linen) name of a canonical key."""
    parts = key.split("/")
    if len(parts) > 2 and parts[1].startswith("encoderblock_"):
        parts[2] = checkpoint_formats.PRE_LINEN_BLOCK_NAMES[parts[2]]
    return "/".join(parts)


def save_npz(model, path: str | os.PathLike) -> None:
    """Writes the model's weights as an .npz checkpoint in the released files' layout (plus its grid where needed)."""
    params = {_released_name(key): keras.ops.convert_to_numpy(v) for key, v in checkpoint_variables(model).items()}
    grid = model.grid_size
    if grid[0] != grid[1] or model.position_embedding == "relative":
        params[GRID_KEY] = np.asarray(grid, np.int64)
    with open(path, "wb") as f:
        np.savez(f, **params)
