"""The served model as an OpenVINO IR: what `keras_vit.serving.export --format openvino` adds to a version.

The IR is `openvino/model.xml` and `model.bin` in the version's folder,
beside the SavedModel, with `openvino/runtime.json` (the precision it runs
in, the class names); `keras_vit.serving.server --prefer_openvino_model`
runs it behind the same REST and gRPC contract. It is converted from the
SavedModel's own `predict_pixels` computation at the serving size (OpenVINO
reads TensorFlow functions directly; `keras_vit.serving.openvino_fusion` then
rewrites Keras' layer norms as OpenVINO's MVN), its numeric outputs only: OpenVINO has
no image decoding, so `serving_default`'s images are decoded by the
SavedModel's `decode` function, as for a LiteRT version, and the class names
are looked up here (OpenVINO's TensorFlow reader turns string constants into
their Python reprs).

Precisions (`--precision`):
- "f32": float32 throughout.
- "bf16": the same IR, run with `INFERENCE_PRECISION_HINT=bf16` (AVX512_BF16
  or AMX); refused on a CPU without native bfloat16, where it would be emulated.
- "int8": NNCF's post-training quantization (`model_type=TRANSFORMER`),
  calibrated on the check's images, under the same top-1 agreement gate as
  `--format tflite_int8` (`keras_vit.serving.quantization`).
"""

from __future__ import annotations

import json
import os
import queue

import numpy as np

from keras_vit.options import OPENVINO_PRECISIONS as PRECISIONS
from keras_vit.serving.signatures import CLASSES, LABELS, OPENVINO_DIR, PIXELS_INPUT

MODEL_FILE = "model.xml"
RUNTIME_FILE = "runtime.json"
#: A `--openvino_plugin_config`, as its refusals show it.
PLUGIN_CONFIG_EXAMPLE = '{"PERFORMANCE_HINT": "LATENCY"}'


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bfloat16 natively here (AVX512_BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def convert(compute_pixels, precision: str, calibration: np.ndarray | None = None):
    """An `ov.Model` of the numeric `predict_pixels` concrete function; "int8" quantized on `calibration` pixels."""
    import openvino as ov

    from keras_vit.serving.openvino_fusion import fuse_layer_normalization

    if precision not in PRECISIONS:
        raise ValueError(f"Unknown OpenVINO precision {precision!r}; expected one of {PRECISIONS}.")
    if precision == "bf16" and not native_bf16():
        raise ValueError("--precision bf16: this CPU has no native bfloat16 (AVX512_BF16 or AMX), so OpenVINO would "
                         "emulate it, slower than float32; export --precision f32 or int8.")
    model = ov.convert_model(compute_pixels)
    fuse_layer_normalization(model)
    if precision != "int8":
        return model
    import nncf

    batches = [calibration[i: i + 1] for i in range(len(calibration))]
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), model_type=nncf.ModelType.TRANSFORMER)


def plugin_config(text: str) -> dict:
    """`--openvino_plugin_config`'s JSON object of OpenVINO CPU properties (OpenVINO Model Server's
    `--plugin_config`), checked as OpenVINO compiles a model with it; ValueError naming what it refuses."""
    import openvino as ov

    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--openvino_plugin_config is not JSON ({error}): give an object such as "
                         f"'{PLUGIN_CONFIG_EXAMPLE}'.") from None
    if not isinstance(config, dict) or not all(isinstance(v, (str, int, float, bool)) for v in config.values()):
        raise ValueError(f"--openvino_plugin_config {text}: give a JSON object of OpenVINO CPU properties and their "
                         f"values, such as '{PLUGIN_CONFIG_EXAMPLE}'.")
    if "INFERENCE_PRECISION_HINT" in config:
        raise ValueError("--openvino_plugin_config: INFERENCE_PRECISION_HINT is the export's --precision, the one its "
                         "agreement check measured; export another version to change it.")
    core = ov.Core()
    settable = sorted(k for k, mode in core.get_property("CPU", "SUPPORTED_PROPERTIES").items() if mode == "RW")
    unknown = sorted(set(config) - set(settable))
    if unknown:
        raise ValueError(f"--openvino_plugin_config: {', '.join(unknown)} is not a property of OpenVINO's CPU plugin "
                         f"one can set; those are {', '.join(k for k in settable if k != 'INFERENCE_PRECISION_HINT')}.")
    pixels = ov.opset13.parameter([1, 2], np.float32)
    try:
        core.compile_model(ov.Model([ov.opset13.relu(pixels)], [pixels]), "CPU", config)
    except RuntimeError as error:
        reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
        raise ValueError(f"--openvino_plugin_config {text}: OpenVINO refuses it: {reason}") from None
    return config


def save(model, version_folder: str, precision: str, labels: list[str] | None) -> None:
    """Writes the IR and its `runtime.json` into `version_folder/openvino/`."""
    import openvino as ov

    folder = os.path.join(version_folder, OPENVINO_DIR)
    os.makedirs(folder, exist_ok=True)
    ov.save_model(model, os.path.join(folder, MODEL_FILE), compress_to_fp16=False)
    with open(os.path.join(folder, RUNTIME_FILE), "w") as f:
        json.dump({"precision": precision, "labels": labels}, f)


class OpenVINOModel:
    """An `openvino/` IR compiled for the CPU: the `predict_pixels` outputs of float32 [N, H, W, 3] pixels.

    Args:
        folder: the version's `openvino/` folder.
        concurrent_calls: how many calls may run at once (the server's `num_batch_threads` when batching). One is
            compiled for latency: one stream, every core on each call. More are compiled for throughput
            (OpenVINO's `THROUGHPUT` hint): the cores are split into streams that run their calls side by side, each
            with its own infer request, so no call waits for another and no core idles between a stream's layers
            while the server's request threads take a core; a lone call then has one stream's cores.
        plugin_config: OpenVINO CPU properties over these choices (`plugin_config`), e.g.
            `{"PERFORMANCE_HINT": "LATENCY"}`: one stream whatever `concurrent_calls`, so a lone call has every
            core (docs/serving.md gives what each costs).
    """

    def __init__(self, folder: str, concurrent_calls: int = 1, plugin_config: dict | None = None):
        import openvino as ov

        self.folder = folder
        try:
            with open(os.path.join(folder, RUNTIME_FILE)) as f:
                runtime = json.load(f)
            self.precision = runtime["precision"]
            config = {"INFERENCE_PRECISION_HINT": {"bf16": "bf16"}.get(self.precision, "f32")}
            if concurrent_calls > 1:
                config |= {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": concurrent_calls}
            config |= plugin_config or {}
            self.compiled = ov.Core().compile_model(os.path.join(folder, MODEL_FILE), "CPU", config)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ValueError(f"{folder} is not an OpenVINO model OpenVINO can run: {error}") from None
        self.labels = None if runtime.get("labels") is None else np.array([s.encode() for s in runtime["labels"]],
                                                                           dtype=object)
        shape = self.compiled.input(PIXELS_INPUT).get_partial_shape()
        #: (H, W) of the pixels it takes: the serving size.
        self.image_size = (shape[1].get_length(), shape[2].get_length())
        #: How many calls it runs side by side, each on its share of the cores.
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        #: Idle infer requests, one per concurrent call; a call takes one and hands it back.
        self.requests: queue.Queue = queue.Queue()  # waiters served first come, first served
        for _ in range(max(1, concurrent_calls)):
            self.requests.put(self.compiled.create_infer_request())

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [N, H, W, 3] in [0, 255] -> the signature's outputs (copies, safe to keep)."""
        if tuple(pixels.shape[1:3]) != self.image_size:
            raise ValueError(f"The OpenVINO model takes {self.image_size[0]}x{self.image_size[1]} pixels (it was "
                             f"exported at one size), got {pixels.shape[1]}x{pixels.shape[2]}.")
        request = self.requests.get()
        try:
            results = request.infer({PIXELS_INPUT: np.ascontiguousarray(pixels, np.float32)})
            outputs = {output.get_any_name(): np.array(value) for output, value in results.items()}
        finally:
            self.requests.put(request)
        if self.labels is not None:
            outputs[LABELS] = self.labels[outputs[CLASSES]]
        return outputs
