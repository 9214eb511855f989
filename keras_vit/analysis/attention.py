"""What ViT attends to and how far it looks: attention rollout (paper Fig. 6) and mean attention distance (Fig. 7, 11).

Both read the attention weights of `VisionTransformer.attention_maps`
([batch, heads, N, N] per block, N = prefix + gh * gw tokens). The functions
on maps (`rollout_matrix`, `attention_distance`) are the definitions; the
functions on a model run it over images in batches and apply them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Images per forward pass when a function is given more.
BATCH_SIZE = 32

#: `mean_attention_distance` levels: between every pixel pair of two patches, or between patch centres.
LEVELS = ("pixel", "patch")


def rollout_matrix(maps: list[np.ndarray]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) over the given blocks, first to last: [batch, N, N].

    Per block the heads are averaged, the residual connection is accounted as
    `0.5 * A + 0.5 * I`, rows are renormalised to 1, and the blocks' matrices
    are multiplied, the last block's on the left. Row i says how much of
    token i's final representation flows from each input token; every row
    sums to 1.
    """
    joint = None
    for weights in maps:
        a = np.asarray(weights, np.float64).mean(axis=1)
        a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        joint = a if joint is None else a @ joint
    if joint is None:
        raise ValueError("Attention rollout needs the maps of at least one block.")
    return joint


def select_rollout(joint: np.ndarray, grid_size: tuple[int, int], num_prefix_tokens: int) -> np.ndarray:
    """The rollout the classifier sees, over the patch tokens: [batch, gh, gw].

    With a class token, its row; with global average pooling (no prefix
    tokens), the mean of the patch tokens' rows.
    """
    rows = joint[:, 0, num_prefix_tokens:] if num_prefix_tokens else joint.mean(axis=1)
    return rows.reshape(len(joint), *grid_size)


def attention_rollout(model, images, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The attention rollout of `model` on `images`, over the images' patch grid: [batch, gh, gw].

    Args:
        model: a `keras_vit.VisionTransformer`.
        images: [batch, h, w, channels] model inputs (as for `model.predict`).
        batch_size: images per forward pass.

    Upsampled onto the image (`keras_vit.analysis.plots.rollout_overlay`),
    this is the paper's Figure 6.
    """
    out = [
        select_rollout(rollout_matrix(model.attention_maps(chunk)), model.grid_for(chunk.shape[1:3]), model.num_prefix_tokens)
        for chunk in _chunks(images, batch_size)
    ]
    return np.concatenate(out)


def patch_distances(
    grid_size: tuple[int, int], patch_stride: tuple[int, int], level: str = "pixel"
) -> np.ndarray:
    """[G, G] distances in input pixels between the patch tokens of a grid (G = gh * gw, raster order).

    `level="pixel"`: the mean Euclidean distance between the pixels of token
    q's patch and those of token k's, each patch `patch_stride` pixels (all
    sh * sw * sh * sw pixel pairs, summed in closed form per offset: the
    in-patch offset difference t along an axis of s pixels has weight s - |t|).
    `level="patch"`: the distance between the patch centres.
    """
    if level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}; expected one of {LEVELS}.")
    (gh, gw), (sh, sw) = grid_size, patch_stride
    dy = np.arange(-(gh - 1), gh)[:, None] * sh  # patch offsets in pixels, [2gh - 1, 1]
    dx = np.arange(-(gw - 1), gw)[None, :] * sw
    if level == "patch":
        by_offset = np.hypot(dy, dx)
    else:
        ty, tx = np.arange(-(sh - 1), sh), np.arange(-(sw - 1), sw)
        wy, wx = (sh - np.abs(ty)) / sh**2, (sw - np.abs(tx)) / sw**2
        y = dy[:, :, None, None] + ty[None, None, :, None]
        x = dx[:, :, None, None] + tx[None, None, None, :]
        by_offset = (np.hypot(y, x) * wy[:, None] * wx[None, :]).sum(axis=(2, 3))
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    return by_offset[rows[:, None] - rows[None, :] + gh - 1, cols[:, None] - cols[None, :] + gw - 1]


def attention_distance(maps: list[np.ndarray], distances: np.ndarray) -> np.ndarray:
    """Per block and head, sum over images and patch queries of `sum_k A'[q, k] * D[q, k]`: [blocks, heads].

    A' is the attention among patch tokens renormalised per query row (prefix
    tokens neither query nor are keys); `distances` is `patch_distances`.
    Divide by images x patches for the mean.
    """
    patches = len(distances)
    out = []
    for weights in maps:
        a = np.asarray(weights, np.float64)[:, :, -patches:, -patches:]
        a = a / a.sum(axis=-1, keepdims=True)
        out.append(np.einsum("bhqk,qk->h", a, distances))
    return np.stack(out)


def mean_attention_distance(
    model, images, level: str = "pixel", batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """Mean attention distance of `model` in input pixels, per block and head: [layers, heads].

    Appendix D.7's "distance between the query pixel and all other pixels,
    weighted by the attention weight", averaged over images and patch-token
    queries. Each token covers `model.patch_stride` input pixels (a hybrid's
    ResNet stride times its patch size), so plain and hybrid models read on
    one scale; the grid is each batch's own (a dynamic model takes any size).

    Args:
        model: a `keras_vit.VisionTransformer`.
        images: model inputs [batch, h, w, channels], or an iterable of such
            batches (e.g. a `tf.data.Dataset` of images, or of (images, labels)).
        level: "pixel" (the paper's) or "patch" (between patch centres).
        batch_size: images per forward pass for an array.
    """
    distances = {}  # by grid: a dynamic model's batches may come at several sizes
    total, count = 0.0, 0
    for chunk in _chunks(images, batch_size):
        grid = model.grid_for(chunk.shape[1:3])
        if grid not in distances:
            distances[grid] = patch_distances(grid, model.patch_stride, level)
        total = total + attention_distance(model.attention_maps(chunk), distances[grid]) / len(distances[grid])
        count += len(chunk)
    if not count:
        raise ValueError("mean_attention_distance got no images.")
    return total / count


def _chunks(images, batch_size: int) -> Iterable[np.ndarray]:
    """Batches of images from an array or an iterable of batches ((images, labels) pairs too)."""
    if hasattr(images, "shape"):
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"Expected images [batch, height, width, channels], got shape {images.shape}.")
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
        return
    for batch in images:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield np.asarray(batch)
