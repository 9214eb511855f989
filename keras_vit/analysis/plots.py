"""The analyses as figures a person can read, drawn with matplotlib (no pyplot state: each function makes its own
`Figure` and writes it to a PNG)."""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage


def new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("The analysis plots need matplotlib: pip install 'keras_vit[analysis]'.") from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure, path: str | os.PathLike) -> str:
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path, format="png")
    return os.fspath(path)


def rollout_overlay(image: np.ndarray, rollout: np.ndarray) -> np.ndarray:
    """The image [h, w, 3] (pixels in [0, 255]) weighted by its rollout [gh, gw], scaled to [0, 1] and upsampled.

    Returns float [h, w, 3] in [0, 1]: the paper's Figure 6 masking.
    """
    mask = upsample(rollout, image.shape[:2])
    return np.clip(image / 255.0, 0.0, 1.0) * mask[..., None]


def upsample(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [gh, gw] map, divided by its maximum and bilinearly resized to `size` (values in [0, 1])."""
    scaled = grid_map / max(float(grid_map.max()), 1e-12)
    zoomed = ndimage.zoom(scaled, (size[0] / grid_map.shape[0], size[1] / grid_map.shape[1]), order=1, grid_mode=True,
                          mode="nearest")
    return np.clip(zoomed, 0.0, 1.0)


def plot_attention(images: np.ndarray, rollouts: np.ndarray, path, title: str = "Attention rollout") -> str:
    """One row per image: the input, the rollout on the patch grid, and the input masked by it (Fig. 6)."""
    count = len(images)
    figure = new_figure(9, 3 * count + 0.4)
    figure.suptitle(title)
    axes = figure.subplots(count, 3, squeeze=False)
    for row, (image, rollout) in enumerate(zip(images, rollouts)):
        axes[row, 0].imshow(np.clip(image / 255.0, 0, 1))
        axes[row, 0].set_title("input")
        shown = axes[row, 1].imshow(rollout / max(rollout.max(), 1e-12), cmap="inferno", vmin=0, vmax=1)
        axes[row, 1].set_title(f"rollout ({rollout.shape[0]}x{rollout.shape[1]} patches)")
        figure.colorbar(shown, ax=axes[row, 1], fraction=0.046, label="relative attention")
        axes[row, 2].imshow(rollout_overlay(image, rollout))
        axes[row, 2].set_title("input x rollout")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(figure, path)


def plot_distance(distance: np.ndarray, path, title: str = "Mean attention distance", patch_stride=None) -> str:
    """The paper's Figure 7 (right): each head's mean attention distance against its block's depth."""
    layers, heads = distance.shape
    figure = new_figure(6, 4.5)
    ax = figure.subplots()
    depth = np.repeat(np.arange(1, layers + 1)[:, None], heads, axis=1)
    colours = np.broadcast_to(np.arange(1, heads + 1)[None], distance.shape)
    dots = ax.scatter(depth.ravel(), distance.ravel(), c=colours.ravel(), cmap="viridis", s=18)
    bar = figure.colorbar(dots, ax=ax, label="head")
    bar.set_ticks(np.unique(np.linspace(1, heads, min(heads, 8)).round()))
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(np.arange(1, layers + 1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_xlim(0.5, layers + 0.5)
    stride = f"\n{patch_stride[0]}x{patch_stride[1]} input pixels per token" if patch_stride else ""
    ax.set_title(f"{title}{stride}", fontsize=10)
    return save_figure(figure, path)


def plot_position_similarity(similarity: np.ndarray, path, title: str = "Position embedding similarity") -> str:
    """The paper's Figure 7 (center): for each grid position, its cosine similarity to every other position."""
    gh, gw = similarity.shape[:2]
    cell = min(1.0, 10.0 / max(gh, gw))
    figure = new_figure(max(gw * cell + 1.4, 6.5), gh * cell + 0.8)
    figure.suptitle(title, fontsize=10)
    axes = figure.subplots(gh, gw, squeeze=False)
    shown = None
    for i in range(gh):
        for j in range(gw):
            shown = axes[i, j].imshow(similarity[i, j], cmap="viridis", vmin=-1, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(str(i + 1), rotation=0, labelpad=8)
    for j in range(gw):
        axes[-1, j].set_xlabel(str(j + 1))
    figure.supxlabel("input patch column")
    figure.supylabel("input patch row")
    figure.colorbar(shown, ax=axes, fraction=0.03, label="cosine similarity")
    return save_figure(figure, path)


def plot_filters(filters: np.ndarray, ratios: np.ndarray, path, title: str = "Patch embedding filters") -> str:
    """The paper's Figure 7 (left): principal components of the embedding filters, each scaled to [0, 1]."""
    count, _, _, channels = filters.shape
    if channels not in (1, 3):
        raise ValueError(
            f"The embedding filters act on {channels} channels (a hybrid's ResNet features), not on pixels: "
            "there is no image to draw."
        )
    columns = min(7, count)
    rows = -(-count // columns)
    figure = new_figure(max(1.3 * columns, 6.5), 1.45 * rows + 0.8)
    figure.suptitle(f"{title}\nfirst {count} principal components ({ratios.sum():.0%} of the variance)", fontsize=10)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for index, (component, ratio) in enumerate(zip(filters, ratios)):
        low, high = component.min(), component.max()
        image = (component - low) / max(high - low, 1e-12)
        ax = axes.flat[index]
        ax.imshow(image[..., 0] if channels == 1 else image, cmap="gray" if channels == 1 else None)
        ax.set_title(f"{index + 1}: {ratio:.1%}", fontsize=8)
    return save_figure(figure, path)
