"""The input check (or padding) of a model whose image size varies: height and width must divide by its patch stride."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.utils import to_pair


@keras.saving.register_keras_serializable(package="keras_vit")
class StrideAlignment(keras.layers.Layer):
    """Makes [batch, H, W, C] images fit a whole grid of tokens of `stride` pixels each.

    With `pad=False` an image whose height or width does not divide by the
    stride is refused: a ValueError naming both when the size is known as the
    graph is traced (eager calls and most traces), else TensorFlow's
    InvalidArgumentError with the same message when the graph runs (in an
    XLA-compiled graph, which drops assertions, the compile fails on the
    patch reshape instead). Nothing is ever cut off silently. With
    `pad=True` the images are padded with zeros at the bottom and the right
    to the next multiples of the stride (timm's `dynamic_img_pad`).

    Args:
        stride: (sh, sw) input pixels per token: the patch size, times the
            ResNet's downsampling for hybrids.
        pad: pad instead of refusing.

    Shapes:
        input: [batch, H, W, C].
        output: [batch, H', W', C], H' and W' the multiples of the stride (H and W with `pad=False`).
    """

    def __init__(self, stride: int | tuple[int, int], pad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.stride = to_pair(stride, "stride")
        self.pad = pad

    def call(self, images):
        if self.pad:
            extra = [(-ops.shape(images)[axis]) % s for axis, s in zip((1, 2), self.stride)]
            return ops.pad(images, [[0, 0], [0, extra[0]], [0, extra[1]], [0, 0]])
        static = images.shape[1:3]
        if all(size is not None for size in static):
            if any(size % s for size, s in zip(static, self.stride)):
                raise ValueError(self._message(static))
            return images
        return self._checked(images)

    def _checked(self, images):
        """The images, after a run-time check of a size unknown when traced."""
        import tensorflow as tf  # keras.ops has no assertion

        height, width = tf.shape(images)[1], tf.shape(images)[2]
        sh, sw = self.stride
        check = tf.debugging.Assert(
            tf.logical_and(height % sh == 0, width % sw == 0),
            [f"Image size (height, width) does not divide by the patch stride {self.stride} (pad with "
             "dynamic_image_pad=True, or resize): got", height, width],
        )
        with tf.control_dependencies([check]):
            # Under XLA the assertion is dropped; this reshape to whole patches fails instead of truncating.
            whole = tf.reshape(images, [tf.shape(images)[0], height // sh, sh, width // sw, sw, tf.shape(images)[3]])
            checked = tf.reshape(whole, tf.shape(images))
        checked.set_shape(images.shape)
        return checked

    def _message(self, size) -> str:
        return (
            f"Image size {tuple(size)} (height, width) does not divide by the patch stride {self.stride}: "
            "resize or crop the images, or build the model with dynamic_image_pad=True to pad them."
        )

    def compute_output_shape(self, input_shape):
        if not self.pad:
            return input_shape
        padded = [None if n is None else -(-n // s) * s for n, s in zip(input_shape[1:3], self.stride)]
        return (input_shape[0], *padded, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(stride=self.stride, pad=self.pad)
        return config
