"""Export a keras_vit model as a SavedModel that TensorFlow Serving serves unchanged.

    python -m serving.export --model runs/demo/model.keras --model_base_path models/vit [--version N] [--labels labels.txt]

Layout: `<model_base_path>/<version>/saved_model.pb + variables/ + assets.extra/`
(the version is the next integer when not given), plus `models.config` (a
model_config_list) and `batching_parameters.txt` in `<model_base_path>` for
`tensorflow_model_server --model_config_file ... --enable_batching
--batching_parameters_file ...`; TF Serving only loads numeric sub-folders, so
the two files do not disturb it.

Signatures:
- `serving_default`: `images` DT_STRING [N] of encoded JPEG/PNG/GIF/BMP
  images of any size; decoded, resized (bilinear) to the model's size and
  scaled to [-1, 1] inside the graph.
- `predict_pixels`: `pixels` DT_FLOAT [N, H, W, 3] in [0, 255] at the model's size.
Both return `probabilities` [N, classes], the top-k `classes` (DT_INT64) and
`scores` [N, k], and with labels also `labels` (DT_STRING) [N, k].
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf
import keras

import keras_vit

DEFAULT_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_pixels"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


class ServingModule(tf.Module):
    """The serving graph around a Keras model that maps [-1, 1] images to logits."""

    def __init__(self, model: keras.Model, labels: list[str] | None = None, top_k: int = 5):
        super().__init__()
        self.model = model
        self.image_size = tuple(int(s) for s in model.input_shape[1:3])
        self.num_classes = int(model.output_shape[-1])
        if labels is not None and len(labels) != self.num_classes:
            raise ValueError(f"{len(labels)} labels given for a model of {self.num_classes} classes.")
        self.top_k = min(top_k, self.num_classes)
        self.labels = None if labels is None else tf.constant(labels)
        height, width = self.image_size
        self.serve_images = tf.function(
            self._serve_images, input_signature=[tf.TensorSpec([None], tf.string, name="images")]
        )
        self.serve_pixels = tf.function(
            self._serve_pixels, input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")]
        )

    def _decode(self, encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.image.resize(image, self.image_size)  # bilinear, as training's evaluation

    def _serve_images(self, images):
        pixels = tf.map_fn(self._decode, images, fn_output_signature=tf.TensorSpec([*self.image_size, 3], tf.float32))
        return self._outputs(pixels)

    def _serve_pixels(self, pixels):
        return self._outputs(pixels)

    def _outputs(self, pixels):
        logits = self.model(pixels / 127.5 - 1.0, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        scores, classes = tf.math.top_k(probabilities, k=self.top_k)
        outputs = {"probabilities": probabilities, "classes": tf.cast(classes, tf.int64), "scores": scores}
        if self.labels is not None:
            outputs["labels"] = tf.gather(self.labels, classes)
        return outputs


def next_version(model_base_path: str) -> int:
    """One more than the largest numeric sub-folder, or 1."""
    if not os.path.isdir(model_base_path):
        return 1
    versions = [int(d) for d in os.listdir(model_base_path) if d.isdigit()]
    return max(versions, default=0) + 1


def export(
    model: keras.Model | str,
    model_base_path: str,
    version: int | None = None,
    labels: list[str] | None = None,
    model_name: str | None = None,
    top_k: int = 5,
) -> str:
    """Writes the SavedModel, its warmup requests, models.config and batching parameters; returns the version's path.

    The version appears atomically: it is written beside and renamed into place,
    so a server polling `model_base_path` never sees half of it.
    """
    if isinstance(model, str):
        model = keras_vit.load_model(model)
    model_base_path = os.path.abspath(model_base_path)
    version = next_version(model_base_path) if version is None else int(version)
    target = os.path.join(model_base_path, str(version))
    if os.path.exists(target):
        raise ValueError(f"Version {version} already exists at {target}.")
    os.makedirs(model_base_path, exist_ok=True)
    module = ServingModule(model, labels, top_k)
    staging = tempfile.mkdtemp(prefix=f".export-{version}-", dir=model_base_path)
    try:
        tf.saved_model.save(
            module,
            staging,
            signatures={
                DEFAULT_SIGNATURE: module.serve_images.get_concrete_function(),
                PIXELS_SIGNATURE: module.serve_pixels.get_concrete_function(),
            },
        )
        write_warmup_requests(os.path.join(staging, WARMUP_FILE), model_name or _name(model_base_path), module.image_size)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    name = model_name or _name(model_base_path)
    write_model_config(os.path.join(model_base_path, "models.config"), name, model_base_path)
    write_batching_parameters(os.path.join(model_base_path, "batching_parameters.txt"))
    return target


def write_warmup_requests(path: str, model_name: str, image_size: tuple[int, int], count: int = 2) -> None:
    """PredictionLog records that TF Serving replays on load (`assets.extra/tf_serving_warmup_requests`)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=DEFAULT_SIGNATURE)
            )
            request.inputs["images"].CopyFrom(tf.make_tensor_proto([encode_png(_gray_image(image_size, 64 * (i + 1)))]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_model_config(path: str, name: str, base_path: str) -> None:
    """A model_config_list for `--model_config_file` (the latest version is served)."""
    with open(path, "w") as f:
        f.write(
            "model_config_list {\n"
            "  config {\n"
            f'    name: "{name}"\n'
            f'    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n'
            "    model_version_policy { latest { num_versions: 1 } }\n"
            "  }\n"
            "}\n"
        )


def write_batching_parameters(path: str, max_batch_size: int = 32, batch_timeout_micros: int = 2000) -> None:
    """BatchingParameters for `--enable_batching --batching_parameters_file`."""
    with open(path, "w") as f:
        f.write(
            f"max_batch_size {{ value: {max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            "max_enqueued_batches { value: 100 }\n"
            "num_batch_threads { value: 2 }\n"
        )


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _gray_image(size: tuple[int, int], value: int) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def _name(model_base_path: str) -> str:
    return os.path.basename(os.path.normpath(model_base_path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a .keras file (e.g. runs/demo/model.keras)")
    parser.add_argument("--model_base_path", required=True, help="the model's folder; versions go below it")
    parser.add_argument("--version", type=int, default=None, help="default: the next integer")
    parser.add_argument("--labels", default=None, help="a text file with one class name per line")
    parser.add_argument("--model_name", default=None, help="name in models.config (default: the folder's name)")
    parser.add_argument("--top_k", type=int, default=5, help="how many classes and scores to return")
    args = parser.parse_args(argv)
    labels = None
    try:
        if args.labels:
            with open(args.labels) as f:
                labels = [line.rstrip("\n") for line in f if line.strip()]
        path = export(args.model, args.model_base_path, args.version, labels, args.model_name, args.top_k)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Exported {args.model} to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
