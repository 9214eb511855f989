"""Original checkpoints: the .npz files of google-research/vision_transformer and AugReg.

A checkpoint is an `np.savez` archive whose keys are the reference's '/'-joined
parameter paths (`Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`, ...).
`checkpoint_variables` maps those keys to the variables of a keras_vit model,
and `load_npz` / `save_npz` move weights through that map.

Loading follows the reference's fine-tuning rules (`checkpoint.py`,
`load_pretrained`): the head is kept when its shape fits the model's classes
and is otherwise left zero-initialised (a new task); `pre_logits` is dropped
when the model has no representation layer; position embeddings are resized to
the model's grid. Every other variable must be present with its exact shape.
"""

from __future__ import annotations

import logging
import os
import zipfile

import numpy as np
import keras

from keras_vit import layers as vit_layers

logger = logging.getLogger(__name__)

_BLOCK = {
    "attention_norm": "LayerNorm_0",
    "attention": "MultiHeadDotProductAttention_1",
    "mlp_norm": "LayerNorm_2",
    "mlp_dense_1": "MlpBlock_3/Dense_0",
    "mlp_dense_2": "MlpBlock_3/Dense_1",
}
_NORM = {"gamma": "scale", "beta": "bias"}
# Keys a checkpoint may hold that a model may legitimately not use.
_DROPPABLE_PREFIXES = ("pre_logits/", "head/")
_POSITION_EMBEDDING = "Transformer/posembed_input/"


def checkpoint_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Maps each reference checkpoint key to the model variable that holds it."""
    out: dict[str, keras.Variable] = {}
    for layer in model.layers:
        if isinstance(layer, vit_layers.TransformerBlock):
            prefix = f"Transformer/{layer.name}/"
            for name, ref in _BLOCK.items():
                out.update(_leaf_variables(getattr(layer, name), prefix + ref))
        elif isinstance(layer, vit_layers.AddPositionEmbedding):
            out.update({_POSITION_EMBEDDING + v.name: v for v in layer.weights})
        elif isinstance(layer, vit_layers.ResidualUnit):
            block, unit = layer.name.split("_")
            for sub in ("conv1", "gn1", "conv2", "gn2", "conv3", "gn3", "conv_proj", "gn_proj"):
                if getattr(layer, sub) is not None:
                    out.update(_leaf_variables(getattr(layer, sub), f"{block}/{unit}/{sub}"))
        elif isinstance(layer, vit_layers.PatchEmbedding):
            out.update(_leaf_variables(layer.projection, layer.name))
        elif isinstance(layer, vit_layers.ClassToken):
            out[layer.name] = layer.cls
        elif layer.name == "encoder_norm":
            out.update(_leaf_variables(layer, "Transformer/encoder_norm"))
        elif layer.weights:
            out.update(_leaf_variables(layer, layer.name))
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


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a checkpoint into a dict, with a clear error for a missing or corrupt file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"Could not read checkpoint {os.fspath(path)!r} as an .npz archive: {error}") from error


def load_npz(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads an original .npz checkpoint into a keras_vit model, in place.

    Raises:
        ValueError: the file is unreadable, or a key is missing, unexpected or
            of the wrong shape (the message names the key and both shapes).
            Nothing is assigned unless the whole checkpoint fits.
    """
    params = read_npz(path)
    variables = checkpoint_variables(model)
    problems = []
    missing = [k for k in variables if k not in params and not k.startswith("head/")]
    problems += [f"missing key {k!r} (expected shape {tuple(variables[k].shape)})" for k in missing]
    extra = [k for k in params if k not in variables and not k.startswith(_DROPPABLE_PREFIXES)]
    problems += [f"unexpected key {k!r} (shape {params[k].shape}) that the model has no place for" for k in extra]

    head_keys = [k for k in variables if k.startswith("head/")]
    keep_head = all(k in params and params[k].shape == tuple(variables[k].shape) for k in head_keys)
    if head_keys and not keep_head:
        logger.info("The checkpoint's head does not fit %d classes: keeping a new zero-initialised head.", variables[head_keys[0]].shape[-1])
    assignments = []
    for key, variable in variables.items():
        if key not in params or (key in head_keys and not keep_head):
            continue
        value, expected = params[key], tuple(variable.shape)
        if key.startswith(_POSITION_EMBEDDING) or value.shape == expected:
            assignments.append((key, variable, value))  # position embeddings are resized by their layer below
        elif value.size == np.prod(expected) and value.squeeze().shape == tuple(d for d in expected if d != 1):
            assignments.append((key, variable, value.reshape(expected)))  # GroupNorm (1, 1, 1, C) -> (C,)
        else:
            problems.append(f"key {key!r}: expected shape {expected}, found {value.shape}")
    if problems:
        raise ValueError(f"Checkpoint {os.fspath(path)!r} does not fit model {model.name!r}: " + "; ".join(problems))

    position = [a for a in assignments if a[0].startswith(_POSITION_EMBEDDING)]
    if position:
        layer = next(layer for layer in model.layers if isinstance(layer, vit_layers.AddPositionEmbedding))
        try:
            layer.assign_embeddings([value for _, _, value in position])
        except ValueError as error:
            raise ValueError(f"Checkpoint {os.fspath(path)!r} does not fit model {model.name!r}: {error}") from error
    for key, variable, value in assignments:
        if not key.startswith(_POSITION_EMBEDDING):
            variable.assign(np.asarray(value, dtype=variable.dtype))


def save_npz(model: keras.Model, path: str | os.PathLike) -> None:
    """Writes the model's weights as an .npz checkpoint in the reference's layout."""
    params = {key: keras.ops.convert_to_numpy(v) for key, v in checkpoint_variables(model).items()}
    with open(path, "wb") as f:
        np.savez(f, **params)
