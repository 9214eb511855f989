"""Checking a `Checkpoint` against a model, once, before anything is assigned; and the fine-tuning head policy.

`validate` returns every (variable, value) to assign, position embeddings
already resized to the model's grid, or raises one ValueError that names the
source, the first problem, how many more there are and, when the source
records its architecture, how it differs from the model's.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import keras

from keras_vit.patch_resampling import resample_patch_embedding
from keras_vit.options import ARCHITECTURE, CONVENTIONS, HEAD_POLICIES, MODEL_OPTIONS
from keras_vit.weights import layout
from keras_vit.weights.sources import Checkpoint

logger = logging.getLogger(__name__)



def validate(model, checkpoint: Checkpoint, head: str = "auto") -> list[tuple[keras.Variable, np.ndarray]]:
    """The assignments that load `checkpoint` into `model` under the `head` policy; ValueError if it does not fit."""
    if head not in HEAD_POLICIES:
        raise ValueError(f"Unknown head policy {head!r}; expected one of {HEAD_POLICIES}.")
    variables = layout.model_variables(model)
    params = checkpoint.params
    vit = layout.is_vision_transformer(model)
    problems: list[str] = []
    skipped = _head_keys(model, checkpoint, variables, head, problems) if vit else set()
    for key, variable in variables.items():
        if key not in params and key not in skipped:
            problems.append(f"missing {checkpoint.name(key)!r} (the model's shape {tuple(variable.shape)})")
    droppable = (*layout.HEADS, layout.PRE_LOGITS) if vit else ()
    for key in params:
        if key not in variables and not key.startswith(droppable):
            problems.append(f"unexpected {checkpoint.name(key)!r} (shape {params[key].shape}) that the model has no place for")
    problems += [f"unexpected {name!r} (shape {shape}) that the model has no place for"
                 for name, shape in checkpoint.unexpected.items()]
    if vit:
        problems += _convention_problems(model, checkpoint)

    assignments = []
    for key, variable in variables.items():
        if key not in params or key in skipped:
            continue
        value, expected = params[key], tuple(variable.shape)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            problems.append(f"{checkpoint.name(key)!r} holds NaN or Inf values")
        elif vit and layout.is_position_embedding(key):
            assignments.append((variable, value))  # resized below, each layer's tables as one set
        elif vit and key.endswith(layout.RELATIVE):
            try:
                model.encoder_blocks[layout.block_of(key)].attention.check_relative_embedding(value.shape, checkpoint.grid)
                assignments.append((variable, value))
            except ValueError as error:
                problems.append(str(error))
        elif value.shape == expected:
            assignments.append((variable, value))
        elif vit and key == layout.PATCH_EMBEDDING and value.shape[2:] == expected[2:]:  # another patch size
            assignments.append((variable, resample_patch_embedding(value, expected[:2], model.patch_embedding_resize)))
        elif value.size == np.prod(expected) and value.squeeze().shape == tuple(d for d in expected if d != 1):
            assignments.append((variable, value.reshape(expected)))  # GroupNorm scales stored as (1, 1, 1, C)
        else:
            problems.append(f"{checkpoint.name(key)!r}: the model's shape {expected}, the file holds {value.shape}")
    if vit and not problems:
        for layer in model.position_embeddings:
            assignments = _resized_position_embeddings(layer, checkpoint, assignments, problems)
    assignments += _optimizer_assignments(model, checkpoint, problems)
    if problems:
        raise ValueError(_message(model, checkpoint, problems))
    return assignments


def _convention_problems(model, checkpoint: Checkpoint) -> list[str]:
    """Where the file's conventions (`keras_vit.options.CONVENTIONS`) are not the model's: the final LayerNorm's
    place is a problem; a LayerNorm epsilon, GELU form or pixel statistics of its own warn (the weights fit; the
    outputs shift slightly, or, fed the wrong statistics, more)."""
    stored = checkpoint.architecture or {}
    if "fc_norm" in stored and bool(stored["fc_norm"]) != model.fc_norm:
        where = "after pooling (timm's fc_norm)" if stored["fc_norm"] else "on every token"
        return [f"its final LayerNorm is applied {where}: build the model with fc_norm={bool(stored['fc_norm'])}"]
    differ = [f"{key}={stored[key]!r} (the model's {getattr(model, key)!r})"
              for key in ("layer_norm_epsilon", "approximate_gelu", "pixel_mean", "pixel_std")
              if key in stored and _as_tuple(stored[key]) != _as_tuple(getattr(model, key))]
    if differ:
        warnings.warn(f"{checkpoint.path} was trained with {' and '.join(differ)}: its outputs here differ slightly "
                      f"from its own library's. Build the model with those values (keras_vit.ViT(weights=...) "
                      f"reads them from the file).", stacklevel=4)
    return []


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def _head_keys(model, checkpoint: Checkpoint, variables: dict, head: str, problems: list[str]) -> set[str]:
    """The model's head keys that are not loaded under the policy `head` (a problem where "keep" cannot be met)."""
    keys = [key for key in variables if key.startswith(layout.HEADS)]
    if not keys:
        return set()
    stored = [checkpoint.params[key].shape if key in checkpoint.params else None for key in keys]
    expected = [tuple(variables[key].shape) for key in keys]
    fits = stored == expected
    if head == "keep" and not fits:
        shapes = "no head" if all(s is None for s in stored) else f"a head of shapes {stored}"
        problems.append(f"head='keep', but the file holds {shapes} and the model's head is {expected}")
    if head == "new" or (head == "auto" and not fits):
        if head == "auto" and any(s is not None for s in stored):
            logger.info("The stored head %s does not fit %d classes: keeping a new zero-initialised head.",
                        stored, model.classes)
        return set(keys)
    return set()


def _resized_position_embeddings(layer, checkpoint: Checkpoint, assignments: list, problems: list[str]) -> list:
    """`assignments` with the tables of one position-embedding layer resized by it to the model's grid."""
    tables = {id(v): value for v, value in assignments if any(v is w for w in layer.weights)}
    if len(tables) != len(layer.weights):
        return assignments  # a table is missing: already a problem
    try:
        fitted = layer.fitted([tables[id(v)] for v in layer.weights], checkpoint.grid)
    except ValueError as error:
        problems.append(str(error))
        return assignments
    resized = {id(v): value for v, value in zip(layer.weights, fitted)}
    return [(v, resized.get(id(v), value)) for v, value in assignments]


def _optimizer_assignments(model, checkpoint: Checkpoint, problems: list[str]) -> list:
    """The optimizer state of a training backup, when the model's optimizer is built to take it."""
    optimizer = getattr(model, "optimizer", None)
    if not checkpoint.optimizer or optimizer is None or not optimizer.built:
        return []
    variables = optimizer.variables
    shapes = [tuple(v.shape) for v in variables]
    if [np.shape(value) for value in checkpoint.optimizer] != shapes:
        problems.append(f"the optimizer state it holds ({len(checkpoint.optimizer)} variables) does not fit the "
                        f"model's optimizer ({len(variables)} variables)")
        return []
    return list(zip(variables, checkpoint.optimizer))


def _message(model, checkpoint: Checkpoint, problems: list[str]) -> str:
    message = f"{checkpoint.path} does not fit model {model.name!r}: {problems[0]}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    difference = architecture_difference(model, checkpoint.architecture)
    return message + (f". The file holds another architecture: {difference}." if difference else ".")


def architecture_difference(model, stored: dict | None) -> str:
    """"hidden_size 32 vs 384, num_layers 1 vs 12" (the file's vs the model's), or "" when none can be told."""
    if not stored or not layout.is_vision_transformer(model):
        return ""
    config = model.get_config()
    parts = []
    for key in (*ARCHITECTURE, *MODEL_OPTIONS, *CONVENTIONS):
        if key not in stored:
            continue
        mine, theirs = config.get(key), stored[key]
        if isinstance(mine, (list, tuple)) or isinstance(theirs, (list, tuple)):
            mine, theirs = (tuple(v) if v is not None else None for v in (mine, theirs))
        if mine != theirs:
            parts.append(f"{key} {theirs} vs {mine}")
    return ", ".join(parts) + " (the file's vs the model's)" if parts else ""
