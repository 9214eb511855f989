"""Attention maps: every layer's attention weights, attention rollout and mean attention distance."""

from __future__ import annotations

import numpy as np
import keras

from keras_vit.layers import PatchEmbedding, TransformerBlock


def attention_maps(model: keras.Model, images) -> list[np.ndarray]:
    """Runs `images` through a keras_vit model and returns each block's attention weights.

    The model's ordinary forward pass is untouched (it never materialises these);
    this walks its layers once more, asking each `TransformerBlock` for its scores.

    Args:
        model: a model built by `keras_vit.ViT` (or a constructor).
        images: [batch, H, W, C], as the model takes them.

    Returns:
        One [batch, heads, N, N] float32 array per block, in depth order.
    """
    x = keras.ops.convert_to_tensor(images)
    maps = []
    for layer in model.layers[1:]:
        if isinstance(layer, TransformerBlock):
            x, scores = layer(x, training=False, return_attention_scores=True)
            maps.append(keras.ops.convert_to_numpy(keras.ops.cast(scores, "float32")))
        elif layer.name == "encoder_norm":
            break
        else:
            x = layer(x, training=False)  # Keras passes `training` only to layers that take it
    if not maps:
        raise ValueError(f"Model {model.name!r} has no TransformerBlock layers.")
    return maps


def attention_rollout(maps: list[np.ndarray]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020), as in the paper's Figure 6.

    Heads are averaged, the identity added for the residual, rows renormalised,
    and the layers multiplied. Returns [batch, N, N]; row 0 is the class
    token's attention to every token.
    """
    joint = None
    for weights in maps:
        a = weights.mean(axis=1)
        a = a + np.eye(a.shape[-1])[None]
        a = a / a.sum(axis=-1, keepdims=True)
        joint = a if joint is None else a @ joint
    return joint


def mean_attention_distance(
    maps: list[np.ndarray], grid_size: tuple[int, int], patch_size: int | tuple[int, int]
) -> np.ndarray:
    """Mean attention distance in pixels (the paper's Figure 7), per layer and head.

    For each patch query, the distance to every patch key weighted by the
    attention; averaged over queries and the batch. Prefix tokens (the class
    token) are left out. Returns [layers, heads].
    """
    gh, gw = grid_size
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    rows, cols = np.meshgrid(np.arange(gh) * ph, np.arange(gw) * pw, indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.float64)
    distance = np.linalg.norm(coords[:, None] - coords[None], axis=-1)  # [N, N]
    out = []
    for weights in maps:
        prefix = weights.shape[-1] - gh * gw
        w = weights[:, :, prefix:, prefix:]
        w = w / w.sum(axis=-1, keepdims=True)
        out.append((w * distance).sum(axis=-1).mean(axis=(0, 2)))
    return np.stack(out)


def patch_grid(model: keras.Model) -> tuple[tuple[int, int], tuple[int, int]]:
    """((gh, gw), (ph, pw)) of a keras_vit model, for `mean_attention_distance`."""
    embedding = next(layer for layer in model.layers if isinstance(layer, PatchEmbedding))
    return embedding.grid_size(embedding.input.shape), embedding.patch_size
