"""LoRA (Hu et al., ICLR 2022) on a VisionTransformer's attention projections, through Keras' own `enable_lora`.

Each chosen `EinsumDense` (`query`, `value`; optionally `key`, `out`) keeps
its kernel frozen and learns a low-rank update `A @ B` (Keras' factors:
A [D, heads, rank], B [rank, head_dim] for the input projections); every
other weight is frozen but the classification head. Keras merges the
factors into the kernel whenever the layer is saved (`model.save`,
`save_weights`), so a `.keras` file, a SavedModel exported from it, an
`.npz`, HF or timm file hold a plain model of the same size as before.

A training backup needs what a merged file loses, the frozen kernels and the
factors apart (`lora_state`, `restore_lora_state`), to resume exactly.
"""

from __future__ import annotations

import numpy as np
import keras

#: The attention projections LoRA may adapt, and those it adapts by default (the LoRA paper's W_q and W_v).
LORA_TARGETS = ("query", "key", "value", "out")
DEFAULT_LORA_TARGETS = ("query", "value")
#: What a backup keeps of each LoRA projection: the frozen kernel and the two factors.
_STATE = ("_kernel", "lora_kernel_a", "lora_kernel_b")


def enable_lora(model, rank: int, targets: tuple[str, ...] = DEFAULT_LORA_TARGETS, alpha: float | None = None) -> None:
    """Freezes `model` but its heads and adds rank-`rank` LoRA factors to the chosen projections of every block.

    `alpha` scales the update by alpha / rank (Keras' `lora_alpha`; default: rank, a scale of 1).
    """
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ValueError(f"LoRA targets {list(targets)}: expected some of {LORA_TARGETS}.")
    if rank < 1:
        raise ValueError(f"The LoRA rank must be a positive integer, got {rank}.")
    if lora_layers(model):
        raise ValueError(f"Model {model.name!r} has LoRA already (rank {model.lora_rank}).")
    model.trainable = True
    for layer in model._flatten_layers(include_self=False):
        layer.trainable = False
    for block in model.encoder_blocks:
        for name in targets:
            projection = getattr(block.attention, name)
            projection.trainable = True
            projection.enable_lora(rank, lora_alpha=alpha)
            if projection.bias is not None:
                projection.bias.trainable = False  # the factors alone adapt the projection
    for head in (model.head, model.head_dist):
        if head is not None:
            head.trainable = True


def lora_layers(model) -> list[keras.layers.EinsumDense]:
    """The model's projections with LoRA factors, in block order (none for a model that is not a ViT)."""
    return [getattr(block.attention, name) for block in getattr(model, "encoder_blocks", ()) for name in LORA_TARGETS
            if getattr(getattr(block.attention, name), "lora_enabled", False)]


def lora_state(model) -> dict[str, np.ndarray]:
    """The frozen kernels and the factors of every LoRA projection (what merged files cannot give back)."""
    out = {}
    for index, layer in enumerate(lora_layers(model)):
        for name in _STATE:
            out[f"{index}/{name}"] = keras.ops.convert_to_numpy(getattr(layer, name))
    return out


def restore_lora_state(model, state: dict[str, np.ndarray]) -> None:
    """Assigns `lora_state`'s arrays back; ValueError when they are another model's."""
    layers = lora_layers(model)
    expected = {f"{index}/{name}": tuple(getattr(layer, name).shape) for index, layer in enumerate(layers)
                for name in _STATE}
    found = {key: tuple(np.shape(value)) for key, value in state.items()}
    if found != expected:
        raise ValueError(f"the LoRA state holds {len(found)} arrays for another model than this one's "
                         f"{len(layers)} LoRA projections")
    for index, layer in enumerate(layers):
        for name in _STATE:
            getattr(layer, name).assign(state[f"{index}/{name}"])


class without_merging:
    """Within it, LoRA projections report their frozen kernel as Keras' saving would report a plain layer's
    (`keras_vit.weights.keras_saving` maps each file slot to the variable behind it)."""

    def __init__(self, model):
        self.layers = lora_layers(model)

    def __enter__(self):
        for layer in self.layers:
            layer.lora_enabled = False
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.lora_enabled = True
        return False
