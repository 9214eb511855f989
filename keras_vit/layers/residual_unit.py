"""The post-activation bottleneck unit of the ViT hybrids' ResNet."""

from __future__ import annotations

import keras

from keras_vit.layers.std_conv import StdConv2D

#: GroupNorm of the reference: 32 groups of contiguous channels, epsilon 1e-6.
GROUP_NORM_GROUPS = 32
GROUP_NORM_EPSILON = 1e-6

#: The root downsamples 4x (a stride-2 conv, a stride-2 max pool); each stage after the first halves the map again.
STEM_STRIDE = 4


def resnet_stride(layers: tuple[int, ...]) -> int:
    """How much a ResNet of `layers` units per stage downsamples its input (the hybrid's pixels per feature)."""
    return STEM_STRIDE * 2 ** max(len(layers) - 1, 0)


def group_norm(name: str, dtype, gamma_initializer="ones") -> keras.layers.GroupNormalization:
    """A GroupNormalization configured as the reference's `nn.GroupNorm()`."""
    return keras.layers.GroupNormalization(
        groups=GROUP_NORM_GROUPS, epsilon=GROUP_NORM_EPSILON, gamma_initializer=gamma_initializer, dtype=dtype, name=name
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class ResidualUnit(keras.layers.Layer):
    """Bottleneck unit: `relu(residual + gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x)))))))))`.

    conv1 is 1x1 to `features`, conv2 3x3 with `strides`, conv3 1x1 to
    4 * `features`; all weight-standardised and without bias. The residual is
    projected (1x1 `conv_proj` + `gn_proj`) when the input has other than
    4 * `features` channels or the unit strides. gn3 starts at zero scale, so a
    new unit begins as the identity of its (projected) input.

    Args:
        features: bottleneck width; the unit outputs 4 * features channels.
        strides: stride of the 3x3 conv (and the projection).

    Shapes:
        input: [batch, H, W, C]; output: [batch, H / s, W / s, 4 * features].
    """

    def __init__(self, features: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.strides = strides
        policy = self.dtype_policy
        conv = dict(use_bias=False, padding="same", dtype=policy)
        self.conv1 = StdConv2D(features, 1, name="conv1", **conv)
        self.gn1 = group_norm("gn1", policy)
        self.conv2 = StdConv2D(features, 3, strides=strides, name="conv2", **conv)
        self.gn2 = group_norm("gn2", policy)
        self.conv3 = StdConv2D(4 * features, 1, name="conv3", **conv)
        self.gn3 = group_norm("gn3", policy, gamma_initializer="zeros")
        self.conv_proj = None
        self.gn_proj = None

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"ResidualUnit expects [batch, height, width, channels] inputs, got {input_shape}.")
        if input_shape[-1] != 4 * self.features or self.strides != 1:
            policy = self.dtype_policy
            self.conv_proj = StdConv2D(
                4 * self.features, 1, strides=self.strides, use_bias=False, padding="same", dtype=policy, name="conv_proj"
            )
            self.gn_proj = group_norm("gn_proj", policy)
            self.conv_proj.build(input_shape)
            self.gn_proj.build(self.conv_proj.compute_output_shape(input_shape))
        shape = input_shape
        for layer in (self.conv1, self.gn1, self.conv2, self.gn2, self.conv3, self.gn3):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs):
        residual = inputs
        if self.conv_proj is not None:
            residual = self.gn_proj(self.conv_proj(inputs))
        y = keras.activations.relu(self.gn1(self.conv1(inputs)))
        y = keras.activations.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return keras.activations.relu(residual + y)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in (self.conv1, self.conv2, self.conv3):
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, strides=self.strides)
        return config
