"""The input contract, written once: pixel scaling and the evaluation decode/resize/crop.

Every place that turns images into model inputs imports these: training's
evaluation pipeline, `keras_vit.serving.export`'s signatures, the clients and the tests.

- Scaling (the reference's): [0, 255] -> [-1, 1] as `x / 127.5 - 1`; a
  model trained with other per-channel statistics (DeiT's and many timm
  checkpoints: ImageNet's mean and std) records them (`pixel_mean`,
  `pixel_std`) and gets `(x / 255 - mean) / std`.
- Evaluation: bilinear resize to `image_size / crop_fraction`, then a center
  crop to `image_size` (`crop_fraction=1`: a plain resize, as the reference
  evaluates). A model records its own `crop_fraction`.
"""

from __future__ import annotations

import keras
import numpy as np


#: The per-channel statistics of [0, 1] pixels that DeiT and many timm checkpoints were trained with (ImageNet's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The reference's scaling, x / 127.5 - 1, in those terms (what `pixel_mean=None` means).
REFERENCE_MEAN = REFERENCE_STD = (0.5, 0.5, 0.5)

Statistics = tuple[float, ...] | None


def preprocessing_layer(name: str = "preprocessing", dtype=None, mean: Statistics = None,
                        std: Statistics = None) -> keras.layers.Rescaling:
    """The scaling as a serialisable layer, for `include_preprocessing=True`."""
    scale, offset = _scale_and_offset(mean, std)
    return keras.layers.Rescaling(scale, offset=offset, dtype=dtype, name=name)


def _scale_and_offset(mean: Statistics, std: Statistics) -> tuple:
    """(scale, offset) of x * scale + offset: the reference's 1 / 127.5 and -1, or per channel from the statistics."""
    if mean is None and std is None:
        return 1.0 / 127.5, -1.0
    mean, std = mean or REFERENCE_MEAN, std or REFERENCE_STD
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


def preprocess_input(images, mean: Statistics = None, std: Statistics = None):
    """Maps pixel values in [0, 255] to what a model takes: [-1, 1] as `x / 127.5 - 1` (the reference's), or
    `(x / 255 - mean) / std` per channel for a model trained with those statistics (`model.pixel_mean`, ...).

    Args:
        images: [..., H, W, C] pixel values (any numeric dtype): a NumPy array,
            a tensor of the Keras backend, or a TensorFlow tensor on any
            backend (a tf.data pipeline's, where Keras runs on JAX or PyTorch).
        mean, std: per-channel statistics of [0, 1] pixels; None: the reference's scaling.

    Returns:
        float32 values of the same shape and kind (NumPy in, NumPy out).
    """
    reference = mean is None and std is None  # the reference's own arithmetic, x / 127.5 - 1 (its fixtures' inputs)
    scale, offset = _scale_and_offset(mean, std)
    if isinstance(images, (np.ndarray, list, tuple)):
        x = np.asarray(images, np.float32)
        return x / np.float32(127.5) - np.float32(1.0) if reference else (
            x * np.asarray(scale, np.float32) + np.asarray(offset, np.float32))
    if type(images).__module__.startswith("tensorflow") and keras.backend.backend() != "tensorflow":
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        return x / 127.5 - 1.0 if reference else x * tf.constant(scale, tf.float32) + tf.constant(offset, tf.float32)
    x = keras.ops.cast(images, "float32")
    return x / 127.5 - 1.0 if reference else (
        x * keras.ops.convert_to_tensor(scale, "float32") + keras.ops.convert_to_tensor(offset, "float32"))


def model_inputs(model, pixels):
    """What `model` takes for [0, 255] `pixels`: scaled with its statistics, unless the model scales them itself."""
    if model.include_preprocessing:
        return pixels
    return preprocess_input(pixels, getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None))


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
