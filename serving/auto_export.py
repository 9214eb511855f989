"""`keras_vit.serving.export --format auto`: export every format this CPU runs, keep those that pass the agreement
gate, and put the fastest in place.

Each candidate (`CANDIDATES`) is exported as `serving.export` writes it, into a trial folder inside the model base
path, and timed on the export's own runtime at batch 1 (the SavedModel's `predict_pixels`, LiteRT, OpenVINO). The
int8 candidates carry their agreement check (refused below `--min_top1_agreement`, as when asked for by name;
`benchmarks/precision.py` gives bfloat16's accuracy cost, which is not gated). The fastest that passes is renamed
into place as the version: the same atomic appearance as any export. The table it chose from is kept in the
version (`AUTO_FILE`) and printed by the export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_vit.serving import quantization, signatures

#: The table `--format auto` chose from, in the version's folder.
AUTO_FILE = os.path.join("assets.extra", "format_choice.md")

#: (format, OpenVINO precision) of every candidate, float32 first.
CANDIDATES = [("saved_model", None), ("tflite", None), ("tflite_int8", None), ("openvino", "f32"),
              ("openvino", "bf16"), ("openvino", "int8")]


@dataclasses.dataclass
class Trial:
    """One candidate's export: its speed and agreement, or why it was left out."""

    format: str
    precision: str | None
    images_per_second: float | None = None
    top1_agreement: float | None = None
    left_out: str | None = None

    @property
    def name(self) -> str:
        return self.format if self.precision is None else f"{self.format} {self.precision}"


def export_fastest(export, model, model_base_path: str, version: int, image_size: tuple[int, int],
                   calibration_images: list[str] | None, min_top1_agreement: float, seconds: float = 2.0,
                   **options) -> str:
    """Exports each candidate with `export` (serving.saved_model.export), renames the fastest passing one to
    `version` with the trials' table in it (`AUTO_FILE`); returns its path. ValueError when none passes."""
    from keras_vit.serving.openvino_model import native_bf16

    trials = [Trial(fmt, precision) for fmt, precision in CANDIDATES]
    folder = tempfile.mkdtemp(prefix=".auto-", dir=model_base_path)
    try:
        paths = {}
        for trial in trials:
            if trial.precision == "bf16" and not native_bf16():
                trial.left_out = "no native bfloat16 on this CPU"
                continue
            try:
                paths[trial.name] = export(model, folder, format=trial.format, precision=trial.precision,
                                           calibration_images=calibration_images, min_top1_agreement=min_top1_agreement,
                                           **options)
            except ValueError as error:
                trial.left_out = str(error).split(";")[0]
                continue
            _measure(trial, paths[trial.name], image_size, seconds)
        passing = [t for t in trials if t.left_out is None and (t.top1_agreement or 1.0) >= min_top1_agreement]
        for trial in trials:
            if trial.left_out is None and trial not in passing:
                trial.left_out = f"top-1 agreement {trial.top1_agreement:.2%} below {min_top1_agreement:g}"
        if not passing:
            raise ValueError("--format auto: no format passed; " + "; ".join(f"{t.name}: {t.left_out}" for t in trials))
        best = max(passing, key=lambda t: t.images_per_second)
        with open(os.path.join(paths[best.name], AUTO_FILE), "w") as f:
            f.write(f"--format auto chose {best.name}:\n\n{table(trials)}\n")
        target = os.path.join(model_base_path, str(version))
        os.rename(paths[best.name], target)
        return target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(trial: Trial, version: str, image_size: tuple[int, int], seconds: float) -> None:
    """Times the trial's runtime at batch 1; reads its int8 check's agreement."""
    run = runner(version, trial.format)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, *image_size, 3)).astype(np.float32)
    trial.images_per_second = quantization.images_per_second(lambda: run(pixels), seconds)
    report = os.path.join(version, quantization.REPORT_FILE)
    if os.path.exists(report):
        with open(report) as f:
            trial.top1_agreement = json.load(f)["top1_agreement"]


def runner(version: str, format: str, concurrent_calls: int = 1):
    """pixels -> outputs of a version, on the runtime its format is served by.

    `concurrent_calls`: how many calls the caller makes at once (OpenVINO compiles that many streams; the others run
    one call at a time, or, for TensorFlow, share its thread pools).
    """
    if format.startswith("tflite"):
        from keras_vit.serving.tflite import LiteRTModel

        return LiteRTModel(os.path.join(version, signatures.TFLITE_FILE))
    if format == "openvino":
        from keras_vit.serving.openvino_model import OpenVINOModel

        return OpenVINOModel(os.path.join(version, signatures.OPENVINO_DIR), concurrent_calls)
    function = tf.saved_model.load(version).signatures[signatures.PIXELS_SIGNATURE]
    return lambda pixels: {k: v.numpy() for k, v in function(**{signatures.PIXELS_INPUT: tf.constant(pixels)}).items()}


def table(trials: list[Trial]) -> str:
    """The trials as the export prints them."""
    lines = ["| format | images/s (batch 1) | top-1 agreement | |", "|---|---:|---:|---|"]
    for trial in trials:
        speed = f"{trial.images_per_second:.2f}" if trial.images_per_second else ""
        agreement = f"{trial.top1_agreement:.2%}" if trial.top1_agreement is not None else ""
        lines.append(f"| {trial.name} | {speed} | {agreement} | {trial.left_out or ''} |")
    return "\n".join(lines)
