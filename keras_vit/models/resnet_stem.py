"""The hybrids' ResNet as layers: the weight-standardised root and the stages of post-activation bottleneck units.

`VisionTransformer` (hybrids) and `keras_vit.ResNet` build the same layers, with the same names, from here.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_vit.layers import ResidualUnit, StdConv2D
from keras_vit.layers.residual_unit import group_norm

@dataclasses.dataclass(frozen=True)
class ResNetLayers:
    """The ResNet's layers: `conv_root` (7x7 / 2, 64 * width), `gn_root`, and `stages` of `ResidualUnit`s.

    Stage i has `layers[i]` units of 64 * width * 2^i bottleneck features
    (4x that out); the first unit of every stage after the first strides 2.
    """

    conv_root: StdConv2D
    gn_root: keras.layers.GroupNormalization
    stages: tuple[tuple[ResidualUnit, ...], ...]

    @classmethod
    def build(cls, layers: tuple[int, ...], width: int = 1, dtype=None) -> "ResNetLayers":
        features = 64 * width
        return cls(
            conv_root=StdConv2D(features, 7, strides=2, padding="same", use_bias=False, dtype=dtype, name="conv_root"),
            gn_root=group_norm("gn_root", dtype),
            stages=tuple(
                tuple(
                    ResidualUnit(
                        features * 2**stage,
                        strides=2 if stage > 0 and unit == 0 else 1,
                        dtype=dtype,
                        name=f"block{stage + 1}_unit{unit + 1}",
                    )
                    for unit in range(units)
                )
                for stage, units in enumerate(layers)
            ),
        )

    def __call__(self, images, dtype=None):
        """[batch, H, W, C] -> the last stage's map [batch, H / stride, W / stride, 256 * width * 2^(stages - 1)]."""
        x = keras.layers.ReLU(dtype=dtype, name="relu_root")(self.gn_root(self.conv_root(images)))
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", dtype=dtype, name="pool_root")(x)
        for unit in (u for stage in self.stages for u in stage):
            x = unit(x)
        return x
