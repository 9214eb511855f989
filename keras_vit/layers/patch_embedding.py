"""Patch embedding: cut an image (or CNN feature map) into patches and project them."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.utils import to_pair


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEmbedding(keras.layers.Layer):
    """Splits the input into non-overlapping PxP patches and projects each to D dims.

    This is the reference's `embedding` module: a VALID convolution with
    kernel [P, P, C, D], stride P and a bias, followed by flattening the grid of
    patch embeddings in row-major (h, w) order.

    Args:
        patch_size: P, an int or a (ph, pw) tuple.
        hidden_size: D, the embedding width.
        kernel_initializer, bias_initializer: initializers of the projection.
        flatten: return the patch sequence (default); False keeps the grid,
            for a model whose image size varies from call to call.

    Shapes:
        input: [batch, H, W, C] with H % ph == 0 and W % pw == 0.
        output: [batch, (H // ph) * (W // pw), D]; with `flatten=False`
        [batch, H // ph, W // pw, D].
    """

    def __init__(
        self,
        patch_size: int | tuple[int, int],
        hidden_size: int,
        kernel_initializer: str | keras.initializers.Initializer = "lecun_normal",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        flatten: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = to_pair(patch_size)
        self.hidden_size = hidden_size
        self.flatten = flatten
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.projection = keras.layers.Conv2D(
            hidden_size,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"PatchEmbedding expects [batch, height, width, channels] inputs, got shape {input_shape}."
            )
        for axis, size, patch in zip(("height", "width"), input_shape[1:3], self.patch_size):
            if size is not None and size % patch:
                raise ValueError(
                    f"Input {axis} {size} is not divisible by the patch size {patch} "
                    f"(input shape {tuple(input_shape)}, patch_size {self.patch_size})."
                )
        self.projection.build(input_shape)

    def grid_size(self, input_shape) -> tuple[int, int]:
        """(gh, gw): the number of patches along height and width."""
        return tuple(None if size is None else size // patch for size, patch in zip(input_shape[1:3], self.patch_size))

    def call(self, inputs):
        x = self.projection(inputs)
        if not self.flatten:
            return x
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1] * shape[2], self.hidden_size))

    def compute_output_shape(self, input_shape):
        gh, gw = self.grid_size(input_shape)
        if not self.flatten:
            return (input_shape[0], gh, gw, self.hidden_size)
        return (input_shape[0], None if gh is None or gw is None else gh * gw, self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            flatten=self.flatten,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
