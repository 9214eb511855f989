"""A keras_vit model as a SavedModel that TensorFlow Serving serves unchanged (what `python -m keras_vit.serving.export` writes).

Layout: `<model_base_path>/<version>/saved_model.pb + variables/ + assets.extra/`
(the version is the next integer when not given; `--format tflite|tflite_int8`
adds `model.tflite`, see `keras_vit.serving.tflite`), plus `models.config` (a
model_config_list) and `batching_parameters.txt` in `<model_base_path>` for
`tensorflow_model_server --model_config_file ... --enable_batching
--batching_parameters_file ...`; TF Serving only loads numeric sub-folders, so
the two files do not disturb it.

The graph follows the model's own config: images are decoded, resized and
cropped as the model is evaluated (`keras_vit.preprocessing`, with the model's
`crop_fraction`) and scaled unless the model scales them itself; logits get a
softmax, a head that ends in softmax or sigmoid is served as it is.

Signatures (names in `keras_vit.serving.signatures`):
- `serving_default`: `images` DT_STRING [N] of encoded JPEG/PNG/GIF/BMP
  images of any size.
- `predict_pixels`: `pixels` DT_FLOAT [N, H, W, 3] in [0, 255] at the model's size;
  [N, -1, -1, 3] for a model built with `dynamic_image_size` (a request's
  images share one size, any that divides by the model's patch stride).
`serving_default` decodes to the serving size: the model's `image_size`, or
`serving_image_size` for a dynamic model.
A classifier returns `probabilities` [N, classes], the top-k `classes`
(DT_INT64) and `scores` [N, k], and with labels also `labels` (DT_STRING)
[N, k]; a model without its head (`include_top=False`) returns `features` [N, D].
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import keras

import keras_vit
from keras_vit.options import DTYPE_POLICIES, EXPORT_FORMATS
from keras_vit.preprocessing import decode_for_eval, model_inputs
from keras_vit.serving import auto_export, quantization, signatures, tflite
from keras_vit.serving.batching import BatchingOptions
from keras_vit.serving.model_manager import version_of
from keras_vit.utils import to_pair

#: Head activations whose outputs are served as they are; None and "linear" (logits) get a softmax.
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


class ServingModule(tf.Module):
    """The serving graph around a keras_vit model, built from what the model says about itself."""

    def __init__(
        self,
        model: keras_vit.VisionTransformer,
        labels: list[str] | None = None,
        top_k: int = 5,
        serving_image_size: int | tuple[int, int] | None = None,
        jit_compile: bool = False,
    ):
        super().__init__()
        self.model = model
        self.image_size = serving_size(model, serving_image_size)
        self.crop_fraction = model.crop_fraction
        activation = model.classifier_activation
        if model.include_top and activation not in (None, "linear", *PROBABILITY_ACTIVATIONS):
            raise ValueError(f"Cannot serve probabilities from a head that ends in {activation!r}.")
        self.apply_softmax = model.include_top and activation in (None, "linear")
        if labels is not None and not model.include_top:
            raise ValueError("Labels given for a model without its head (include_top=False): it serves features.")
        if labels is not None and len(labels) != model.classes:
            raise ValueError(f"{len(labels)} labels given for a model of {model.classes} classes.")
        self.top_k = min(top_k, model.classes)
        # Pixels to numeric outputs (forward pass, softmax, top-k), one XLA cluster with `jit_compile`; decoding
        # and the labels' gather stay outside: XLA has no string ops.
        self.compute = tf.function(self._compute, jit_compile=True) if jit_compile else self._compute
        # XLA drops the model's run-time check that a dynamic size divides by the patch stride (and fails on a
        # reshape instead): the compiled signatures check first, outside the cluster, with the model's own message.
        alignment = getattr(model, "stride_alignment", None)
        self.check_size = alignment if jit_compile and alignment is not None and not alignment.pad else None
        self.labels = None if labels is None else tf.constant(labels)
        pixels_size = (None, None) if getattr(model, "dynamic_image_size", False) else self.image_size  # ResNets: fixed
        images_spec = tf.TensorSpec([None], tf.string, name=signatures.IMAGES_INPUT)
        self.serve_images = tf.function(self._serve_images, input_signature=[images_spec])
        # Saved as a function of the SavedModel, not a signature: what a LiteRT version runs before its pixels.
        self.decode = tf.function(self._decode_images, input_signature=[images_spec])
        self.serve_pixels = tf.function(
            self._serve_pixels,
            input_signature=[tf.TensorSpec([None, *pixels_size, 3], tf.float32, name=signatures.PIXELS_INPUT)],
        )

    def fixed_size_pixels(self, numeric: bool = False) -> tf.types.experimental.ConcreteFunction:
        """`predict_pixels` at the serving size alone, for a runtime that needs one size (LiteRT, OpenVINO);
        `numeric`: without the labels (OpenVINO, which the runner names itself)."""
        spec = tf.TensorSpec([None, *self.image_size, 3], tf.float32, name=signatures.PIXELS_INPUT)
        return tf.function(self.compute if numeric else self._serve_pixels, input_signature=[spec]).get_concrete_function()

    def _decode(self, encoded):
        return decode_for_eval(encoded, self.image_size, self.crop_fraction)

    def _decode_images(self, images):
        """[N] encoded images -> float32 [N, H, W, 3] in [0, 255], resized and cropped as the model is evaluated."""
        return tf.map_fn(self._decode, images, fn_output_signature=tf.TensorSpec([*self.image_size, 3], tf.float32))

    def _serve_images(self, images):
        return self._outputs(self._decode_images(images))

    def _serve_pixels(self, pixels):
        return self._outputs(pixels)

    def _compute(self, pixels):
        """float32 [N, H, W, 3] pixels in [0, 255] -> the signature's numeric outputs (features or head)."""
        outputs = tf.cast(self.model(model_inputs(self.model, pixels), training=False), tf.float32)
        if not self.model.include_top:
            return {signatures.FEATURES: outputs}
        probabilities = tf.nn.softmax(outputs, axis=-1) if self.apply_softmax else outputs
        scores, classes = tf.math.top_k(probabilities, k=self.top_k)
        return {
            signatures.PROBABILITIES: probabilities,
            signatures.CLASSES: tf.cast(classes, tf.int64),
            signatures.SCORES: scores,
        }

    def _outputs(self, pixels):
        result = self.compute(pixels if self.check_size is None else self.check_size(pixels))
        if self.labels is not None:
            result[signatures.LABELS] = tf.gather(self.labels, result[signatures.CLASSES])
        return result


def serving_size(model: keras.Model, serving_image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """The (h, w) that `serving_default` decodes to: the model's `image_size`, or another for a dynamic model."""
    if serving_image_size is None:
        return tuple(model.image_size)
    size = to_pair(serving_image_size, "serving_image_size")
    if size == tuple(model.image_size):
        return size
    if not getattr(model, "dynamic_image_size", False):
        raise ValueError(
            f"--serving_image_size {size[0]}x{size[1]}: model {model.name!r} takes {model.image_size[0]}x"
            f"{model.image_size[1]} images only; build it with dynamic_image_size=True to serve another size."
        )
    model.grid_for(size)  # a size that does not divide by the patch stride raises
    return size


def with_dtype_policy(model: keras.Model, dtype_policy: str) -> keras.Model:
    """The same model, weights and all, computing under `dtype_policy` (itself if it already does)."""
    if dtype_policy not in DTYPE_POLICIES:
        raise ValueError(f"Unknown dtype policy {dtype_policy!r}; expected one of {', '.join(DTYPE_POLICIES)}.")
    if model.dtype_policy.name == dtype_policy:
        return model
    clone = type(model).from_config({**model.get_config(), "dtype": dtype_policy})
    clone.set_weights(model.get_weights())
    return clone


def next_version(model_base_path: str) -> int:
    """One more than the largest numeric sub-folder, or 1."""
    if not os.path.isdir(model_base_path):
        return 1
    versions = [v for v in map(version_of, os.listdir(model_base_path)) if v is not None]
    return max(versions, default=0) + 1


def export(
    model: keras.Model | str,
    model_base_path: str,
    version: int | None = None,
    labels: list[str] | None = None,
    model_name: str | None = None,
    top_k: int = 5,
    dtype_policy: str | None = None,
    format: str = "saved_model",
    serving_image_size: int | tuple[int, int] | None = None,
    jit_compile: bool = False,
    calibration_images: list[str] | None = None,
    min_top1_agreement: float = 0.99,
    precision: str | None = None,
) -> str:
    """Writes the SavedModel, its warmup requests, models.config and batching parameters; returns the version's path.

    The version appears atomically: it is written beside and renamed into place,
    so a server polling `model_base_path` never sees half of it. `dtype_policy`
    (one of `keras_vit.options.DTYPE_POLICIES`; None: the model's own) is the
    policy the served graph computes in: "mixed_bfloat16" halves the cost of
    its matrix products where the CPU has AVX512_BF16 or AMX (and emulates them,
    slower, where it has not); the variables stay float32, the outputs float32.
    `format` (one of `keras_vit.options.EXPORT_FORMATS`) "tflite" or
    "tflite_int8" adds `model.tflite` (`keras_vit.serving.tflite`) to the version.
    `serving_image_size` (a dynamic model only; default its `image_size`) is
    the size `serving_default` decodes images to, and the one size
    `model.tflite` takes: LiteRT runs fixed shapes. `jit_compile` compiles
    the model's forward pass with XLA in the saved graph (about the Keras
    model's speed on a CPU); TF Serving then needs
    `--xla_cpu_compilation_enabled` (so does `keras_vit.serving.server`).

    "openvino" adds an OpenVINO IR (`keras_vit.serving.openvino_model`) of
    `precision` ("f32" default, "bf16", "int8"), at the same one size.

    "tflite_int8" and "openvino" in int8 are checked before the version appears
    (`keras_vit.serving.quantization`): its top-1 agreement with the float32
    model on `calibration_images` (files or folders; default: the warm-up
    images) below `min_top1_agreement` refuses the export; the figures go to
    `assets.extra/int8_check.json` in the version.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"A SavedModel is a TensorFlow graph: export with Keras' TensorFlow backend (KERAS_BACKEND=tensorflow); "
            f"this process runs on {keras.backend.backend()}. The .keras file loads there unchanged."
        )
    if format not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {', '.join(EXPORT_FORMATS)}.")
    if format == "auto":
        return _export_auto(model, model_base_path, version, labels, model_name, top_k, dtype_policy,
                            serving_image_size, jit_compile, calibration_images, min_top1_agreement, precision)
    runtime = {"tflite": "LiteRT", "tflite_int8": "LiteRT", "openvino": "OpenVINO"}.get(format)
    lite = runtime is not None  # a model for another runtime beside the SavedModel
    if precision is not None and format != "openvino":
        raise ValueError(f"--precision chooses the OpenVINO model's precision; --format {format} has none of its own.")
    if lite and jit_compile:
        raise ValueError(f"--jit_compile compiles the SavedModel's graph; --format {format} is served by {runtime}.")
    if lite and dtype_policy not in (None, "float32"):
        raise ValueError(f"--format {format} converts the float32 model; --dtype_policy {dtype_policy} is for saved_model.")
    if isinstance(model, str):
        model = keras_vit.load_model(model)
    if lite:
        dtype_policy = "float32"  # converted from float32; the runtime computes in its own precision
    if dtype_policy is not None:
        model = with_dtype_policy(model, dtype_policy)
    model_base_path = os.path.abspath(model_base_path)
    version = next_version(model_base_path) if version is None else int(version)
    target = os.path.join(model_base_path, str(version))
    if os.path.exists(target):
        raise ValueError(f"Version {version} already exists at {target}.")
    os.makedirs(model_base_path, exist_ok=True)
    module = ServingModule(model, labels, top_k, serving_image_size, jit_compile)
    staging = tempfile.mkdtemp(prefix=f".export-{version}-", dir=model_base_path)
    try:
        tf.saved_model.save(
            module,
            staging,
            signatures={
                signatures.DEFAULT_SIGNATURE: module.serve_images.get_concrete_function(),
                signatures.PIXELS_SIGNATURE: module.serve_pixels.get_concrete_function(),
            },
        )
        write_warmup_requests(os.path.join(staging, WARMUP_FILE), model_name or _name(model_base_path), module.image_size)
        if format in ("tflite", "tflite_int8"):
            flatbuffer = tflite.convert(module.fixed_size_pixels(), int8=format == "tflite_int8")
            with open(os.path.join(staging, signatures.TFLITE_FILE), "wb") as f:
                f.write(flatbuffer)
        if format == "tflite_int8" and model.include_top:
            pixels, source = _check_pixels(module, calibration_images)
            report = quantization.check(module.fixed_size_pixels(), os.path.join(staging, signatures.TFLITE_FILE),
                                        pixels, source)
            _keep_report(staging, report, min_top1_agreement)
        if format == "openvino":
            _write_openvino(module, staging, precision or "f32", labels, calibration_images, min_top1_agreement)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    name = model_name or _name(model_base_path)
    write_model_config(os.path.join(model_base_path, "models.config"), name, model_base_path)
    write_batching_parameters(os.path.join(model_base_path, "batching_parameters.txt"))
    return target


def _export_auto(model, model_base_path, version, labels, model_name, top_k, dtype_policy, serving_image_size,
                 jit_compile, calibration_images, min_top1_agreement, precision) -> str:
    """`format="auto"`: the fastest format that passes the agreement gate (`keras_vit.serving.auto_export`)."""
    if jit_compile or precision is not None or dtype_policy not in (None, "float32"):
        raise ValueError("--format auto chooses the format and precision itself: give it no --jit_compile, "
                         "--precision or --dtype_policy.")
    if isinstance(model, str):
        model = keras_vit.load_model(model)
    model_base_path = os.path.abspath(model_base_path)
    os.makedirs(model_base_path, exist_ok=True)
    version = next_version(model_base_path) if version is None else int(version)
    if os.path.exists(os.path.join(model_base_path, str(version))):
        raise ValueError(f"Version {version} already exists at {os.path.join(model_base_path, str(version))}.")
    name = model_name or _name(model_base_path)
    path = auto_export.export_fastest(export, model, model_base_path, version, serving_size(model, serving_image_size),
                                      calibration_images, min_top1_agreement, labels=labels, model_name=name,
                                      top_k=top_k, serving_image_size=serving_image_size)
    write_model_config(os.path.join(model_base_path, "models.config"), name, model_base_path)
    write_batching_parameters(os.path.join(model_base_path, "batching_parameters.txt"))
    return path


def _check_pixels(module: ServingModule, calibration_images: list[str] | None) -> tuple[np.ndarray, str]:
    """The int8 check's (and calibration's) pixels: the user's images, else the export's warm-up images."""
    if calibration_images:
        return quantization.calibration_pixels(calibration_images, module._decode), quantization.CALIBRATION_SET
    pixels = np.stack([module._decode(tf.constant(encode_png(_gray_image(module.image_size, 64 * (i + 1))))).numpy()
                       for i in range(2)])
    return pixels, quantization.WARMUP_IMAGES


def _keep_report(staging: str, report: quantization.QuantizationReport, min_top1_agreement: float) -> None:
    """Writes the int8 check's report into the staged version; ValueError (the version is not written) on a refusal."""
    with open(os.path.join(staging, quantization.REPORT_FILE), "w") as f:
        json.dump(dataclasses.asdict(report), f, indent=1)
    refusal = report.refusal(min_top1_agreement)
    if refusal:
        raise ValueError(refusal)


def _write_openvino(module: ServingModule, staging: str, precision: str, labels: list[str] | None,
                    calibration_images: list[str] | None, min_top1_agreement: float) -> None:
    """Converts `predict_pixels`' computation to OpenVINO into the staged version; int8: calibrated and checked."""
    from keras_vit.serving import openvino_model

    compute = module.fixed_size_pixels(numeric=True)
    if precision != "int8":
        openvino_model.save(openvino_model.convert(compute, precision), staging, precision, labels)
        return
    pixels, source = _check_pixels(module, calibration_images)  # NNCF calibrates on them; the check runs on them
    openvino_model.save(openvino_model.convert(compute, precision, pixels), staging, precision, labels)
    if not module.model.include_top:
        return
    with tempfile.TemporaryDirectory(prefix="float32-openvino-") as float32:
        openvino_model.save(openvino_model.convert(compute, "f32"), float32, "f32", None)
        report = quantization.compare(
            module.fixed_size_pixels(), openvino_model.OpenVINOModel(os.path.join(staging, signatures.OPENVINO_DIR)),
            openvino_model.OpenVINOModel(os.path.join(float32, signatures.OPENVINO_DIR)), pixels, source, "OpenVINO")
    _keep_report(staging, report, min_top1_agreement)


def write_warmup_requests(path: str, model_name: str, image_size: tuple[int, int], count: int = 2) -> None:
    """PredictionLog records that TF Serving replays on load (`assets.extra/tf_serving_warmup_requests`)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signatures.DEFAULT_SIGNATURE)
            )
            request.inputs[signatures.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto([encode_png(_gray_image(image_size, 64 * (i + 1)))]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_model_config(path: str, name: str, base_path: str) -> None:
    """A ModelServerConfig (model_config_list) for `--model_config_file`: the latest version is served."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    entry.model_version_policy.latest.num_versions = 1
    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))


def write_batching_parameters(path: str, options: BatchingOptions = BatchingOptions()) -> None:
    """BatchingParameters for `--enable_batching --batching_parameters_file` (defaults: `BatchingOptions`)."""
    with open(path, "w") as f:
        f.write(options.to_text())


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
