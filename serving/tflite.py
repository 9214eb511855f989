"""The served model as a LiteRT (TensorFlow Lite) flatbuffer: what `keras_vit.serving.export --format tflite|tflite_int8` adds.

The file is `model.tflite` in the version's folder, beside the SavedModel:
where TF Serving's `--prefer_tflite_model` looks for it, and what
`keras_vit.serving.server --prefer_tflite_model` runs. It holds the `predict_pixels`
signature, with the SavedModel's input and output names, dtypes and shapes.

- "tflite": float32, run by XNNPACK's kernels.
- "tflite_int8": dynamic-range quantization. Weights are int8 (per output
  channel); activations are quantized per call at run time, so the matrix
  products run in int8 (VNNI where the CPU has it) with no calibration data.
  Softmax, LayerNorm and GELU stay float32.

LiteRT has no image decoding, so `serving_default`'s encoded images are
decoded, resized and cropped by the SavedModel's `decode` function (the same
`keras_vit.preprocessing.decode_for_eval` as its own `serving_default`), and
their pixels then run through `model.tflite`.
"""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from keras_vit.serving.signatures import PIXELS_INPUT, PIXELS_SIGNATURE


def convert(serve_pixels: tf.types.experimental.ConcreteFunction, int8: bool) -> bytes:
    """The `predict_pixels` concrete function as a LiteRT flatbuffer with that signature.

    The variables are folded into constants first: the converter keeps a
    SavedModel's variables as resources, which XNNPACK cannot run and which
    the signature runner leaves uninitialized.
    """
    frozen = convert_variables_to_constants_v2(serve_pixels)

    def predict_pixels(pixels):
        return tf.nest.pack_sequence_as(serve_pixels.structured_outputs, frozen(pixels))

    module = tf.Module()
    module.predict_pixels = tf.function(predict_pixels, input_signature=serve_pixels.structured_input_signature[0])
    with tempfile.TemporaryDirectory(prefix="tflite-") as folder:
        tf.saved_model.save(module, folder, signatures={PIXELS_SIGNATURE: module.predict_pixels})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[PIXELS_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


class LiteRTModel:
    """A `model.tflite` loaded for serving: its `predict_pixels` signature, one call at a time.

    Args:
        path: the `.tflite` file.
        num_threads: XNNPACK's threads (default: one per core).
    """

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
        except (ValueError, RuntimeError) as error:  # not a flatbuffer, or one LiteRT cannot run
            raise ValueError(f"{path} is not a LiteRT model LiteRT can run: {error}") from None
        if PIXELS_SIGNATURE not in self.interpreter.get_signature_list():
            raise ValueError(f"{path} has no {PIXELS_SIGNATURE!r} signature; it was not written by serving.export.")
        self.runner = self.interpreter.get_signature_runner(PIXELS_SIGNATURE)
        #: (H, W) of the pixels it takes: one size, even when the SavedModel beside it takes any.
        self.image_size = tuple(int(n) for n in self.runner.get_input_details()[PIXELS_INPUT]["shape_signature"][1:3])
        self.lock = threading.Lock()  # an interpreter runs one call at a time

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [N, H, W, 3] in [0, 255] -> the signature's outputs (copies, safe to keep)."""
        if tuple(pixels.shape[1:3]) != self.image_size:
            raise ValueError(
                f"{os.path.basename(self.path)} takes {self.image_size[0]}x{self.image_size[1]} pixels (LiteRT runs "
                f"one size), got {pixels.shape[1]}x{pixels.shape[2]}."
            )
        with self.lock:
            outputs = self.runner(**{PIXELS_INPUT: np.ascontiguousarray(pixels, np.float32)})
            return {name: np.array(value) for name, value in outputs.items()}
