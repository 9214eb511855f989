"""Resizing of position embeddings when weights come from another image size.

The default method is the reference's (`vit_jax/checkpoint.py`,
`interpolate_posembed`): `scipy.ndimage.zoom(order=1)` on the (gh, gw, D) grid,
i.e. separable linear interpolation with aligned corners (output index i
samples input index i * (g_old - 1) / (g_new - 1)), computed in float64.
Half-pixel resampling (`"bilinear"`, `"bicubic"`, `"nearest"`, as in
`tf.image.resize`) is available for checkpoints that were trained with it.

Two implementations of each method: NumPy/SciPy for weights on load
(`resize_grid`, `resize_table`), and tensor ops for a model resizing its
tables in its own graph at call time (`resize_grid_op`, `resize_table_op`,
with target sizes that may be symbolic). They agree to float32 rounding.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.ndimage

logger = logging.getLogger(__name__)

#: Resize methods: "reference" (scipy zoom, order 1) or a `keras.ops.image.resize` interpolation.
RESIZE_METHODS = ("reference", "bilinear", "bicubic", "nearest")


def infer_grid(num_tokens: int, like: tuple[int, int]) -> tuple[int, int]:
    """The grid of a stored 1-D position embedding whose grid was not saved with it.

    The reference's checkpoints do not record the grid: they are square, so a
    square count is read as a square grid (the reference's own rule). A count
    equal to the model's is read as the model's grid (loaded as is, as the
    reference does for equal shapes). Any other count is ambiguous (24 tokens
    may be 4x6, 6x4, 3x8, ...) and raises rather than guess: `.keras` and
    `.weights.h5` files written by keras_vit save the grid beside the table.
    """
    side = math.isqrt(num_tokens)
    if side * side == num_tokens:
        return side, side
    if num_tokens == like[0] * like[1]:
        return tuple(like)
    raise ValueError(
        f"Cannot tell the grid of {num_tokens} stored position embeddings (not square, and not the model's grid "
        f"{tuple(like)}); pass the grid it was trained on."
    )


def resize_grid(grid: np.ndarray, new_grid: tuple[int, int], method: str = "reference") -> np.ndarray:
    """Resizes a [gh, gw, D] grid of embeddings to [new_gh, new_gw, D]."""
    _check_method(method)
    if tuple(grid.shape[:2]) == tuple(new_grid):
        return np.asarray(grid)
    if method == "reference":
        zoom = (new_grid[0] / grid.shape[0], new_grid[1] / grid.shape[1], 1)
        out = scipy.ndimage.zoom(np.asarray(grid, np.float64), zoom, order=1)
        if out.shape[:2] != tuple(new_grid):  # zoom rounds the output shape
            raise AssertionError(f"zoom produced {out.shape[:2]}, expected {new_grid}")
        return out.astype(grid.dtype)
    from keras import ops  # deferred: keeps this module importable without a backend

    out = ops.image.resize(np.asarray(grid, np.float32)[None], new_grid, interpolation=method, antialias=False)
    return ops.convert_to_numpy(out)[0].astype(grid.dtype)


def resize_table(table: np.ndarray, new_length: int, method: str = "reference") -> np.ndarray:
    """Resizes a [length, ...] table of embeddings along its first axis."""
    flat = np.asarray(table).reshape(table.shape[0], 1, -1)
    resized = resize_grid(flat, (new_length, 1), method)
    return resized.reshape((new_length,) + table.shape[1:])


def resize_position_embedding(
    posemb: np.ndarray,
    num_prefix_tokens: int,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    method: str = "reference",
) -> np.ndarray:
    """Resizes a learned 1-D position embedding [1, prefix + gh * gw, D] to another grid.

    The prefix rows (the class token's, when the model has one) are kept; the
    grid rows are reshaped to (gh, gw, D), resized, and flattened again.
    """
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(f"Expected a position embedding of shape [1, tokens, D], got {posemb.shape}.")
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    if old_grid is None:
        old_grid = infer_grid(len(grid), new_grid)
    if old_grid[0] * old_grid[1] != len(grid):
        raise ValueError(f"A grid of {old_grid} does not hold the {len(grid)} position embeddings stored.")
    if tuple(old_grid) != tuple(new_grid):
        logger.info("Resizing position embeddings from grid %s to %s (%s).", old_grid, new_grid, method)
    grid = resize_grid(grid.reshape(old_grid[0], old_grid[1], -1), new_grid, method)
    return np.concatenate([prefix, grid.reshape(1, new_grid[0] * new_grid[1], -1)], axis=1)


def resize_grid_op(grid, new_grid, method: str = "reference"):
    """`resize_grid` as tensor ops: a [gh, gw, D] tensor -> [new_gh, new_gw, D]; `new_grid` may be symbolic.

    "reference" is the aligned-corners linear zoom written as two
    interpolation matrices, [new_gh, gh] and [new_gw, gw] (`_linear_weights`),
    applied along each axis; at an equal size they are identities, so the
    table comes back unchanged. The half-pixel methods are
    `keras.ops.image.resize`, the op `resize_grid` runs on load, when the
    new grid is known as the model is traced (always on JAX and PyTorch);
    a TensorFlow graph of unknown image size resizes with `tf.image.resize`,
    the op Keras' TensorFlow backend runs for it.
    """
    _check_method(method)
    from keras import ops

    if method == "reference":
        rows = _linear_weights(grid.shape[0], new_grid[0])
        columns = _linear_weights(grid.shape[1], new_grid[1])
        return ops.einsum("ij,jkd,lk->ild", rows, ops.cast(grid, "float32"), columns)
    grid = ops.cast(grid, "float32")[None]
    if all(isinstance(size, (int, np.integer)) for size in new_grid):
        return ops.image.resize(grid, tuple(new_grid), interpolation=method, antialias=False)[0]
    import tensorflow as tf  # a symbolic size: keras.ops.image.resize takes Python sizes only

    return tf.image.resize(grid, new_grid, method=method, antialias=False)[0]


def resize_table_op(table, new_length, method: str = "reference"):
    """`resize_table` as tensor ops: a [length, D] tensor -> [new_length, D]; `new_length` may be symbolic."""
    return resize_grid_op(table[:, None, :], (new_length, 1), method)[:, 0, :]


def _linear_weights(old: int, new):
    """[new, old] aligned-corners linear interpolation: output i samples input i * (old - 1) / (new - 1).

    As `scipy.ndimage.zoom(order=1)`: a single output samples input 0, and
    so does every output of a single input.
    """
    from keras import ops

    scale = (old - 1) / ops.maximum(ops.cast(new, "float32") - 1.0, 1.0)
    position = ops.cast(ops.arange(new), "float32") * scale
    lower = ops.clip(ops.floor(position), 0, old - 1)
    fraction = (position - lower)[:, None]
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, old - 1)
    return ops.one_hot(lower, old) * (1.0 - fraction) + ops.one_hot(upper, old) * fraction


def _check_method(method: str) -> None:
    if method not in RESIZE_METHODS:
        raise ValueError(f"Unknown position embedding resize method {method!r}; expected one of {RESIZE_METHODS}.")
