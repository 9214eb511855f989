"""One loaded model version: its signatures, input checking, and (batched) execution."""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import numpy as np
import tensorflow as tf

from keras_vit.serving.batching import Batcher, BatchingOptions, Tensors
from keras_vit.serving.errors import ServingError, invalid_argument

from keras_vit.serving.image_limits import DEFAULT_MAX_IMAGE_PIXELS, check_image
from keras_vit.serving.metrics import metrics
from keras_vit.serving.signatures import (
    DEFAULT_SIGNATURE, IMAGES_INPUT, OPENVINO_DIR, PIXELS_INPUT, PIXELS_SIGNATURE, PREDICT_METHOD, TFLITE_FILE,
)


@dataclasses.dataclass(frozen=True)
class ServingOptions:
    """How every version is loaded and run: the server's flags of that kind, in one place (`serving.server` builds it
    from its command line; `ModelManager` hands it to each `Servable`).

    Attributes:
        batching: dynamic batching options (`--enable_batching`), or None to run each request alone.
        max_image_pixels: encoded images (the `images` input) declaring more pixels are refused undecoded.
        prefer_tflite: run the version's `model.tflite` when it has one (TF Serving's `--prefer_tflite_model`):
            the same signatures, inputs and outputs, computed by LiteRT (`keras_vit.serving.tflite`).
        prefer_openvino: run the version's OpenVINO IR (`openvino/`) when it has one, the same way
            (`keras_vit.serving.openvino_model`).
        openvino_config: OpenVINO CPU properties its IR is compiled with, over keras_vit's
            (`openvino_model.plugin_config`, the server's `--openvino_plugin_config`).
        xla_cpu_compilation_enabled: run graphs whose functions must be XLA-compiled (`keras_vit.serving.export
            --jit_compile`), as TF Serving's flag of that name does; without it such a version loads, and each
            request is refused with FAILED_PRECONDITION naming the flag, as TF Serving answers them.
    """

    batching: BatchingOptions | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    prefer_tflite: bool = False
    prefer_openvino: bool = False
    openvino_config: dict | None = None
    xla_cpu_compilation_enabled: bool = False


class Servable:
    """A SavedModel version loaded for serving.

    Args:
        name: the model's name.
        version: its version number.
        path: the version's folder (with saved_model.pb).
        options: how it is loaded and run (`ServingOptions`).
    """

    def __init__(self, name: str, version: int, path: str, options: ServingOptions = ServingOptions()):
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, path
        self.options = options
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        self.signature_defs = proto.meta_graphs[0].signature_def
        #: Whether the graph has functions that must be compiled with XLA (exported with jit_compile=True).
        self.requires_xla = requires_xla(proto)
        self.loaded = tf.saved_model.load(path)
        self.functions = {k: self.loaded.signatures[k] for k in self.loaded.signatures}
        #: What computes `predict_pixels` in place of the SavedModel's graph (a LiteRT or OpenVINO model), or None.
        self.engine, self.runtime = None, "TF"
        if options.prefer_openvino and os.path.isdir(os.path.join(path, OPENVINO_DIR)):
            from keras_vit.serving.openvino_model import OpenVINOModel

            # Batching runs `num_batch_threads` batches at once: as many OpenVINO streams run them side by side
            # (unless `openvino_config` asks for other streams).
            calls = options.batching.num_batch_threads if options.batching is not None else 1
            self.engine = OpenVINOModel(os.path.join(path, OPENVINO_DIR), calls, options.openvino_config)
            self.runtime = "OpenVINO"
        elif options.prefer_tflite and os.path.exists(os.path.join(path, TFLITE_FILE)):
            from keras_vit.serving.tflite import LiteRTModel

            self.engine, self.runtime = LiteRTModel(os.path.join(path, TFLITE_FILE)), "LiteRT"
        if self.engine is not None:
            if not hasattr(self.loaded, "decode"):
                raise ValueError(f"{path}: a {self.runtime} model beside a SavedModel without `decode`; export it "
                                 f"again.")
            self.functions = {DEFAULT_SIGNATURE: self._lite_images, PIXELS_SIGNATURE: self._lite_pixels}
            # The metadata advertises what the engine takes: its one size, where the SavedModel's graph takes any.
            dims = self.signature_defs[PIXELS_SIGNATURE].inputs[PIXELS_INPUT].tensor_shape.dim
            dims[1].size, dims[2].size = self.engine.image_size
        self.batchers = {}
        if options.batching is not None:
            self.batchers = {
                k: Batcher(self._runner(k), options.batching, on_batch=functools.partial(metrics().batch, name, k))
                for k in self.functions
            }

    def signature(self, name: str):
        """The SignatureDef of `name` ("" is serving_default); INVALID_ARGUMENT if absent."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.functions:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        return key, self.signature_defs[key]

    def refuse(self, signature_name: str, method: str) -> None:
        """Raises what TF Serving answers to classify/regress on a predict-only signature."""
        _, signature = self.signature(signature_name)
        kind = "classification" if method == "classify" else "regression"
        raise invalid_argument(
            f"Expected {kind} signature method_name to be tensorflow/serving/{method}. Was: {signature.method_name}"
        )

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray]) -> Tensors:
        """Checks inputs against the signature and runs it (through the batcher when batching)."""
        key, signature = self.signature(signature_name)
        if signature.method_name and signature.method_name != PREDICT_METHOD:
            raise invalid_argument(f"Signature {key} has method {signature.method_name}, not {PREDICT_METHOD}.")
        if self.requires_xla and not self.options.xla_cpu_compilation_enabled and self.engine is None:
            raise ServingError(
                "FAILED_PRECONDITION",
                f"XLA compilation disabled: version {self.version} of {self.name} was exported with --jit_compile; "
                "start the server with --xla_cpu_compilation_enabled to run it.",
            )
        checked = check_inputs(signature, inputs)
        for index, image in enumerate(np.ravel(checked.get(IMAGES_INPUT, []))):
            try:
                check_image(bytes(image), self.options.max_image_pixels, index)
            except ValueError as error:
                raise invalid_argument(str(error)) from None
        batcher = self.batchers.get(key)
        return batcher.submit(checked) if batcher is not None else self._runner(key)(checked)

    def _runner(self, key: str):
        function = self.functions[key]

        def run(inputs: Tensors) -> Tensors:
            start = time.perf_counter()
            try:
                outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
            except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
                raise invalid_argument(op_error_message(error)) from error
            except (tf.errors.OpError, RuntimeError) as error:  # RuntimeError: LiteRT's and OpenVINO's
                raise ServingError("INTERNAL", op_error_message(error)) from error
            finally:
                metrics().runtime(self.name, self.runtime, time.perf_counter() - start)
            return {k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in outputs.items()}

        return run

    def _lite_images(self, **inputs: tf.Tensor) -> Tensors:
        """serving_default of a LiteRT or OpenVINO version: the SavedModel decodes, the engine computes."""
        return self.engine(self.loaded.decode(inputs[IMAGES_INPUT]).numpy())

    def _lite_pixels(self, **inputs: tf.Tensor) -> Tensors:
        return self.engine(inputs[PIXELS_INPUT].numpy())

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()


def requires_xla(proto) -> bool:
    """Whether a SavedModel proto holds a function marked `_XlaMustCompile` (a tf.function with jit_compile=True)."""
    for meta_graph in proto.meta_graphs:
        for function in meta_graph.graph_def.library.function:
            if function.attr["_XlaMustCompile"].b:
                return True
    return False


def op_error_message(error: Exception) -> str:
    """The line of a TensorFlow error that says what was wrong, without the graph's traceback."""
    lines = [line.strip() for line in getattr(error, "message", str(error)).splitlines()]
    skip = ("Graph execution error", "Detected at node", "File ", "[[", "[Op:")
    useful = [line for line in lines if line and not line.startswith(skip)]
    return useful[-1] if useful else (lines[0] if lines else repr(error))


def check_inputs(signature, inputs: dict[str, np.ndarray]) -> Tensors:
    """Names, dtypes and shapes of `inputs` against a SignatureDef; INVALID_ARGUMENT naming what is wrong."""
    expected = set(signature.inputs)
    missing, extra = expected - set(inputs), set(inputs) - expected
    if missing or extra:
        raise invalid_argument(
            f"input size does not match signature: {len(inputs)}!={len(expected)} len({{{', '.join(sorted(inputs))}}}) "
            f"!= len({{{', '.join(sorted(expected))}}})."
            + (f" Missing inputs: {', '.join(sorted(missing))}." if missing else "")
            + (f" Unexpected inputs: {', '.join(sorted(extra))}." if extra else "")
        )
    out = {}
    sizes = set()
    for name, info in signature.inputs.items():
        dtype = tf.dtypes.as_dtype(info.dtype)
        value = np.asarray(inputs[name])
        if dtype == tf.string:
            if value.dtype.kind not in "OSU":
                raise invalid_argument(f"Input {name} expects DT_STRING values, got {value.dtype}.")
            value = value.astype(object)
        else:
            if value.dtype.kind not in "biuf":
                raise invalid_argument(f"Input {name} expects {dtype.name} values, got {value.dtype}.")
            value = value.astype(dtype.as_numpy_dtype)
        dims = [d.size for d in info.tensor_shape.dim]
        if not info.tensor_shape.unknown_rank and (
            value.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, value.shape))
        ):
            shape = "[" + ",".join(str(d) for d in dims) + "]"
            raise invalid_argument(f"Input {name}: expecting shape {shape} but got: [{','.join(map(str, value.shape))}].")
        if value.ndim:
            sizes.add(value.shape[0])
        out[name] = value
    if len(sizes) > 1:
        raise invalid_argument(f"Inputs have different batch sizes: {sorted(sizes)}.")
    if sizes == {0}:
        raise invalid_argument("The request holds no examples.")
    return out
