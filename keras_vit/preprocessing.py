"""The input contract, written once: pixel scaling and the evaluation decode/resize/crop.

Every place that turns images into model inputs imports these: training's
evaluation pipeline, `keras_vit.serving.export`'s signatures, the clients and the tests.

- Scaling (the reference's): [0, 255] -> [-1, 1] as `x / 127.5 - 1`.
- Evaluation: bilinear resize to `image_size / crop_fraction`, then a center
  crop to `image_size` (`crop_fraction=1`: a plain resize, as the reference
  evaluates). A model records its own `crop_fraction`.
"""

from __future__ import annotations

import keras
import numpy as np


def preprocessing_layer(name: str = "preprocessing", dtype=None) -> keras.layers.Rescaling:
    """The scaling as a serialisable layer, for `include_preprocessing=True`."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype=dtype, name=name)


def preprocess_input(images):
    """Maps pixel values in [0, 255] to [-1, 1] as `x / 127.5 - 1`.

    Args:
        images: [..., H, W, C] pixel values (any numeric dtype): a NumPy array,
            a tensor of the Keras backend, or a TensorFlow tensor on any
            backend (a tf.data pipeline's, where Keras runs on JAX or PyTorch).

    Returns:
        float32 values in [-1, 1] of the same shape and kind (NumPy in, NumPy out).
    """
    if isinstance(images, (np.ndarray, list, tuple)):
        return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1.0)
    if type(images).__module__.startswith("tensorflow") and keras.backend.backend() != "tensorflow":
        import tensorflow as tf

        return tf.cast(images, tf.float32) / 127.5 - 1.0
    return keras.ops.cast(images, "float32") / 127.5 - 1.0


def model_inputs(model, pixels):
    """What `model` takes for [0, 255] `pixels`: scaled to [-1, 1], unless the model scales them itself."""
    return pixels if model.include_preprocessing else preprocess_input(pixels)


def eval_resize(image, image_size: tuple[int, int], crop_fraction: float = 1.0):
    """[H, W, C] pixels -> float32 [h, w, C]: bilinear resize to `image_size / crop_fraction`, center crop."""
    import tensorflow as tf

    resized = tuple(round(s / crop_fraction) for s in image_size)
    image = tf.image.resize(tf.convert_to_tensor(image), resized)
    return tf.image.resize_with_crop_or_pad(image, *image_size)


def decode_for_eval(encoded, image_size: tuple[int, int], crop_fraction: float = 1.0):
    """Encoded JPEG/PNG/GIF/BMP bytes (a scalar string tensor) -> float32 [h, w, 3] pixels in [0, 255]."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return eval_resize(image, image_size, crop_fraction)
