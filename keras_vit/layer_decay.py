"""Layer-wise learning-rate decay (timm's `layer_decay`, big_vision's `lr_mults`): lower rates for earlier layers.

With decay d and L encoder blocks, a variable of layer l trains at d ** (L + 1 - l) times the learning rate:
the stem (patch embedding, class and distillation tokens, input position table, a hybrid's ResNet) is layer 0,
block i is layer i + 1 (its LoRA factors and own position table too), and the final LayerNorm, representation
layer and heads are layer L + 1, at the full rate, as timm's `param_groups_layer_decay` assigns them.

Keras optimizers have one learning rate; `LayerDecaySGD`, `LayerDecayAdam` and `LayerDecayAdamW` are Keras'
own, whose `update_step` scales the rate of each variable by its multiplier (by variable path, saved in the
optimizer's config). AdamW's decoupled weight decay keeps the unscaled rate, as Keras applies it apart from the
update.
"""

from __future__ import annotations

import keras

from keras_vit.lora import LORA_TARGETS
from keras_vit.weights import layout


def layer_multipliers(model, decay: float) -> dict[str, float]:
    """{variable path: learning-rate multiplier} of a `VisionTransformer`'s trainable variables under `decay`."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {decay}.")
    depth = len(model.encoder_blocks)
    layer_of = {}
    for key, variable in layout.checkpoint_variables(model).items():
        if key.startswith("Transformer/encoderblock_"):
            layer_of[variable.path] = layout.block_of(key) + 1
        elif key.startswith(("Transformer/encoder_norm", layout.PRE_LOGITS, *layout.HEADS)):
            layer_of[variable.path] = depth + 1
        else:
            layer_of[variable.path] = 0
    for index, block in enumerate(model.encoder_blocks):
        for name in LORA_TARGETS:
            projection = getattr(block.attention, name)
            if projection.lora_enabled:
                layer_of[projection.lora_kernel_a.path] = layer_of[projection.lora_kernel_b.path] = index + 1
    return {path: decay ** (depth + 1 - layer) for path, layer in layer_of.items()}


class LayerDecay:
    """Mixin of a Keras optimizer: each variable's learning rate times its multiplier (`lr_multipliers`, by path)."""

    def __init__(self, *args, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})

    def build(self, var_list):
        super().build(var_list)
        self._multipliers = [self.lr_multipliers.get(v.path, 1.0) for v in var_list]  # in Keras' variable order

    def update_step(self, gradient, variable, learning_rate):
        # `_get_variable_index`: how Keras' own optimizers find a variable's slots in `update_step` (the backend's
        # variable arrives there, without the Keras path).
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = keras.ops.cast(learning_rate, variable.dtype) * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerDecaySGD(LayerDecay, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with per-variable learning-rate multipliers (`keras_vit.layer_decay`)."""


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerDecayAdam(LayerDecay, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with per-variable learning-rate multipliers (`keras_vit.layer_decay`)."""


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerDecayAdamW(LayerDecay, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with per-variable learning-rate multipliers (`keras_vit.layer_decay`)."""


#: The optimizer classes with layer decay, by the Keras class they extend.
WITH_LAYER_DECAY = {keras.optimizers.SGD: LayerDecaySGD, keras.optimizers.Adam: LayerDecayAdam,
                    keras.optimizers.AdamW: LayerDecayAdamW}
