"""What the embeddings learned: position-embedding similarity (paper Fig. 7 center, Fig. 10) and the
principal components of the patch-embedding filters (Fig. 7 left)."""

from __future__ import annotations

import keras
import numpy as np

from keras_vit import position_embeddings

#: Filters the paper's Figure 7 (left) shows.
FILTER_COUNT = 28


def position_embedding_similarity(model) -> np.ndarray:
    """Cosine similarity between the position embeddings of every pair of grid positions: [gh, gw, gh, gw].

    The class token's row is left out; `learned_2d` embeddings are composed
    (row and column halves concatenated) first. Models without absolute
    position embeddings ("none", "relative") have none to compare.
    """
    if not model.position_embeddings:
        kind = position_embeddings.get(model.position_embedding)
        raise ValueError(
            f"Model {model.name!r} has position_embedding={model.position_embedding!r}: "
            f"no learned absolute position embeddings to compare ({kind.no_table})."
        )
    layer = model.position_embeddings[0]  # with a table per block: the first block's
    table = keras.ops.convert_to_numpy(keras.ops.cast(layer.embedding(), "float32"))[0].astype(np.float64)
    grid = table[layer.num_prefix_tokens :]
    unit = grid / np.maximum(np.linalg.norm(grid, axis=-1, keepdims=True), 1e-12)
    gh, gw = layer.grid_size
    return (unit @ unit.T).reshape(gh, gw, gh, gw)


def principal_components(vectors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` principal components of the rows of `vectors` [n, d], and their explained variance ratios.

    Returns ([count, d] orthonormal components, largest variance first, each
    signed so that its largest-magnitude entry is positive; [count] ratios).
    """
    n, d = vectors.shape
    if not 1 <= count <= min(n, d):
        raise ValueError(f"count must be in 1..{min(n, d)} for {n} vectors of {d} values, got {count}.")
    centred = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:count]
    signs = np.sign(components[np.arange(count), np.abs(components).argmax(axis=1)])
    variance = singular**2
    return components * signs[:, None], variance[:count] / max(variance.sum(), 1e-300)


def embedding_filters(model, count: int = FILTER_COUNT, explained_variance: bool = False):
    """Principal components of the patch embedding's D filters, as [count, P, P, C] images.

    Each filter of the `embedding` projection (kernel [P, P, C, D]) is one
    P * P * C vector; the components come by explained variance. For a
    hybrid, C is the ResNet's channels (P is usually 1): the filters act on
    feature maps, not pixels.

    Args:
        model: a `keras_vit.VisionTransformer`.
        count: how many components (the paper shows 28).
        explained_variance: also return each component's explained variance ratio [count].
    """
    kernel = keras.ops.convert_to_numpy(keras.ops.cast(model.embedding.projection.kernel, "float32"))
    ph, pw, channels, hidden = kernel.shape
    components, ratios = principal_components(kernel.reshape(-1, hidden).T.astype(np.float64), count)
    filters = components.reshape(count, ph, pw, channels)
    return (filters, ratios) if explained_variance else filters
