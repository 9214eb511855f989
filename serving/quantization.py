"""The check `keras_vit.serving.export --format tflite_int8` runs on the int8 model it writes, before the version appears.

Dynamic-range int8 can lose accuracy (a ViT's top-1 has dropped from 80% to
62% in other toolchains) or run slower than float32 on a CPU without VNNI, and
neither shows until it is served. The export therefore runs the int8 LiteRT
model and the float32 graph it was converted from on the same images and
measures:

- top-1 agreement: the share of images whose best class is the same in both;
  below `min_top1_agreement` the export is refused and no version is written;
- speed: images per second of int8 against float32 on the same runtime,
  LiteRT (batch 1), said plainly when int8 is the slower one. (Against the
  SavedModel's graph the ratio would mostly measure TensorFlow's call
  overhead on a small model.)

Dynamic-range int8 calibrates nothing: the images only measure the
agreement. They are the user's (`--calibration_images`: image files or
folders of them, decoded as `serving_default` decodes them), or else the
export's warm-up images, which say little about accuracy: the report says
which.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_vit.serving import signatures
from keras_vit.serving.tflite import LiteRTModel, convert

#: Image files a calibration folder is read for.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


#: What the check ran on: a calibration set the user gave, or the export's own warm-up images.
CALIBRATION_SET, WARMUP_IMAGES = "images of --calibration_images", "warm-up images"
#: Where the export keeps the check's figures, in the version's folder.
REPORT_FILE = os.path.join("assets.extra", "int8_check.json")


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """What the int8 check measured."""

    top1_agreement: float
    images: int
    source: str  # CALIBRATION_SET or WARMUP_IMAGES
    int8_images_per_second: float
    float32_images_per_second: float  # float32 on the same runtime
    runtime: str = "LiteRT"  # what ran both: "LiteRT" (tflite_int8) or "OpenVINO" (openvino int8)

    @property
    def speedup(self) -> float:
        return self.int8_images_per_second / self.float32_images_per_second

    def refusal(self, min_top1_agreement: float) -> str | None:
        """Why the export is refused, or None."""
        if self.top1_agreement >= min_top1_agreement:
            return None
        return (
            f"int8 check: top-1 agreement with the float32 model {self.top1_agreement:.2%} on {self.images} "
            f"{self.source} is below --min_top1_agreement {min_top1_agreement:g}: the int8 model answers differently; "
            f"no version was written. Export float32 (--format saved_model or tflite), or lower "
            f"--min_top1_agreement if that difference is acceptable."
        )

    def lines(self) -> list[str]:
        """The report, as the export prints it."""
        out = [
            f"int8 check: top-1 agreement with the float32 model {self.top1_agreement:.2%} on {self.images} "
            f"{self.source}; {self.int8_images_per_second:.2f} images/s int8 against "
            f"{self.float32_images_per_second:.2f} float32, both run by {self.runtime} at batch 1: {self.speedup:.2f}x."
        ]
        if self.source == WARMUP_IMAGES:
            out.append("int8 check: warm-up images are synthetic; pass --calibration_images with real images to "
                       "measure the agreement that matters.")
        if self.speedup < 1:
            out.append("int8 check: int8 is slower than float32 here (it pays off on a CPU with VNNI, once the "
                       "matrix products outweigh quantizing the activations: not for a very small model); serve "
                       "float32 (--format tflite, --format openvino --precision f32, or the SavedModel).")
        return out


def calibration_pixels(paths: list[str], decode) -> np.ndarray:
    """float32 [N, H, W, 3] in [0, 255] of image files (folders: every image in them), decoded by `decode`."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"--calibration_images {path}: no such file or folder.")
    if not files:
        raise ValueError(f"--calibration_images {' '.join(paths)}: no image files (JPEG, PNG, GIF, BMP) there.")
    pixels = []
    for path in files:
        with open(path, "rb") as f:
            try:
                pixels.append(decode(tf.constant(f.read())).numpy())
            except tf.errors.InvalidArgumentError:
                raise ValueError(f"--calibration_images: {path} is not an image TensorFlow can decode.") from None
    return np.stack(pixels).astype(np.float32)


def check(float32_pixels_fn, tflite_path: str, pixels: np.ndarray, source: str, seconds: float = 2.0) -> QuantizationReport:
    """Compares `model.tflite` (int8) with the float32 `predict_pixels` function on `pixels`: the agreement against
    that function, the speed against its float32 LiteRT conversion."""
    with tempfile.TemporaryDirectory(prefix="float32-tflite-") as folder:
        path = os.path.join(folder, signatures.TFLITE_FILE)
        with open(path, "wb") as f:
            f.write(convert(float32_pixels_fn, int8=False))
        return compare(float32_pixels_fn, LiteRTModel(tflite_path), LiteRTModel(path), pixels, source, "LiteRT",
                       seconds)


def compare(float32_pixels_fn, int8, float32, pixels: np.ndarray, source: str, runtime: str,
            seconds: float = 2.0) -> QuantizationReport:
    """The report of an int8 runner (pixels -> outputs) against the float32 `predict_pixels` function: top-1
    agreement on `pixels`, and its speed at batch 1 against `float32`, the same model in float32 on its runtime."""
    key = signatures.PROBABILITIES
    reference = np.concatenate([float32_pixels_fn(tf.constant(pixels[i: i + 16]))[key].numpy()
                                for i in range(0, len(pixels), 16)])
    quantized = np.concatenate([int8(pixels[i: i + 16])[key] for i in range(0, len(pixels), 16)])
    agreement = float(np.mean(reference.argmax(-1) == quantized.argmax(-1)))
    one = pixels[:1]
    return QuantizationReport(agreement, len(pixels), source, images_per_second(lambda: int8(one), seconds),
                              images_per_second(lambda: float32(one), seconds), runtime)


#: The most calls `images_per_second` times: enough to settle a model's rate; a small model reaches it in far under
#: `seconds`, a ViT-B/16 on a CPU (about 10 images/s) never does.
MAX_TIMED_CALLS = 200


def images_per_second(call, seconds: float) -> float:
    """Calls of `call` per second (after one to warm up; at least 3, for `seconds` or `MAX_TIMED_CALLS` calls,
    whichever comes first)."""
    call()
    calls, start = 0, time.perf_counter()
    while calls < 3 or (time.perf_counter() - start < seconds and calls < MAX_TIMED_CALLS):
        call()
        calls += 1
    return calls / (time.perf_counter() - start)
