"""The paper's looks inside a trained ViT: attention maps, attention rollout and mean attention distance."""

from __future__ import annotations

import numpy as np


def attention_maps(model, images, blocks=None) -> list[np.ndarray]:
    """Each chosen block's attention weights, [batch, heads, N, N]: `model.attention_maps(images, blocks)`."""
    return model.attention_maps(images, blocks)


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

    `patch_size` is the input pixels per token: `model.patch_stride`.

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


def patch_grid(model) -> tuple[tuple[int, int], tuple[int, int]]:
    """((gh, gw), (sh, sw)): the token grid and the input pixels per token, for `mean_attention_distance`."""
    return model.grid_size, model.patch_stride
