"""The precision paths a keras_vit model can be served in: speed on this CPU, and what each costs in accuracy.

    python benchmarks/precision.py [--variants ViT_B16] [--batches 1 16] [--rounds 3] [--digits_model model.keras]

Paths, each measured in its own process, alternating round by round:
  keras           the Keras model, `predict_on_batch`, float32 (benchmarks/inference.py's keras_vit)
  saved_model     the exported SavedModel's `predict_pixels`, float32 (what serving.server runs by default)
  saved_model_xla   the same, exported with `--jit_compile` (served with `--xla_cpu_compilation_enabled`)
  saved_model_bf16  the same, exported with `--dtype_policy mixed_bfloat16`
  litert          model.tflite of `keras_vit.serving.export --format tflite`, run by LiteRT (XNNPACK), float32
  litert_int8     model.tflite of `--format tflite_int8`: int8 weights, activations quantized at run time
  openvino        the OpenVINO IR of `--format openvino`, float32
  openvino_bf16   the same IR run in bfloat16 (`--precision bf16`: refused where the CPU has no native bfloat16)
  openvino_int8   `--precision int8`: NNCF's post-training int8, calibrated on the export's warm-up images (speed)
                  or on 32 of the evaluated images (accuracy)

Speed: images/s of ViT at 224x224 with random weights (the cost does not
depend on them), medians over rounds; the CPU's flags head the table.

Accuracy, each path but the float32 SavedModel (the Keras model's own graph)
against the float32 Keras model on the same inputs:
  digits  scikit-learn's 360 test digits through a model trained on digits
          (`--digits_model`, or the demo's training run, about 2 minutes):
          test accuracy, top-1 agreement, largest logit difference.
  photos  64 crops of scikit-learn's two sample photos through ViT-B/16 at
          224 with random weights and a random 1000-class head (no ImageNet
          checkpoint is reachable offline). Random weights leave small
          margins between the top classes, so its agreement is a harsh test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

PATHS = ["keras", "saved_model", "saved_model_xla", "saved_model_bf16", "litert", "litert_int8", "openvino",
         "openvino_bf16", "openvino_int8"]
#: serving.export's arguments for each served path.
EXPORTS = {
    "saved_model": dict(format="saved_model"),
    "saved_model_xla": dict(format="saved_model", jit_compile=True),
    "saved_model_bf16": dict(format="saved_model", dtype_policy="mixed_bfloat16"),
    "litert": dict(format="tflite"),
    # Speed only: random weights leave the top classes too close for the export's agreement gate (the accuracy
    # table measures what int8 costs on a trained model and on the photos).
    "litert_int8": dict(format="tflite_int8", min_top1_agreement=0.0),
    "openvino": dict(format="openvino", precision="f32"),
    "openvino_bf16": dict(format="openvino", precision="bf16"),
    "openvino_int8": dict(format="openvino", precision="int8", min_top1_agreement=0.0),
}
IMAGE_SIZE = 224
PHOTO_CROPS, PHOTO_CLASSES = 64, 1000


# --- The workers: one path, one process ---------------------------------------------------------------


def random_model(variant: str, classes: int | None = None, seed: int = 0):
    """`variant` at 224 with the same random weights in every process; a random head when `classes` is given."""
    import keras
    import keras_vit

    keras.utils.set_random_seed(seed)
    model = getattr(keras_vit, variant)(weights=None, include_top=classes is not None, classes=classes or 1000)
    if model.head is not None:  # Keras' zero head would tie every class
        rng = np.random.default_rng(seed)
        model.head.kernel.assign(rng.normal(0, model.head.kernel.shape[0] ** -0.5, model.head.kernel.shape).astype("float32"))
    return model


def export(model, path: str, folder: str):
    """A step `pixels -> outputs` of `path` for `model`, exported the way serving.export writes it, run by the runtime
    the server runs it with."""
    from keras_vit.serving import auto_export, saved_model

    return auto_export.runner(saved_model.export(model, folder, **EXPORTS[path]), EXPORTS[path]["format"])


def speed_worker(path: str, variant: str, batch: int, seconds: float) -> dict:
    from keras_vit.preprocessing import model_inputs

    model = random_model(variant, classes=1000)
    pixels = np.random.default_rng(1).uniform(0, 255, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        if path == "keras":
            inputs = np.asarray(model_inputs(model, pixels))
            step = lambda: model.predict_on_batch(inputs)  # noqa: E731
        else:
            run = export(model, path, folder)
            step = lambda: run(pixels)  # noqa: E731
        return {"images_per_s": harness.timed(step, batch, seconds)}


def logits_worker(path: str, digits_model: str, out: str) -> dict:
    """Writes the logits of `path` on the digits test split and on the photo crops to `out` (.npz)."""
    import tensorflow as tf

    import keras_vit
    from keras_vit.preprocessing import eval_resize, model_inputs
    from keras_vit.serving import signatures
    from keras_vit.serving.tflite import LiteRTModel, convert

    def logits_of(model, pixels: np.ndarray) -> np.ndarray:
        if path == "keras":
            return in_batches(lambda p: model.predict_on_batch(model_inputs(model, p)), pixels)
        if path == "saved_model_bf16":
            from keras_vit.serving.saved_model import with_dtype_policy

            bf16 = with_dtype_policy(model, "mixed_bfloat16")
            return in_batches(lambda p: bf16.predict_on_batch(model_inputs(bf16, p)), pixels)
        # LiteRT, OpenVINO: the logits function itself, converted as serving.export converts predict_pixels.
        spec = tf.TensorSpec([None, *model.image_size, 3], tf.float32, name=signatures.PIXELS_INPUT)
        logits = tf.function(lambda p: {"logits": model(model_inputs(model, p), training=False)}, input_signature=[spec])
        if path.startswith("openvino"):
            from keras_vit.serving import openvino_model

            precision = EXPORTS[path]["precision"]
            with tempfile.TemporaryDirectory() as folder:
                converted = openvino_model.convert(logits.get_concrete_function(), precision, pixels[:32])
                openvino_model.save(converted, folder, precision, None)
                runner = openvino_model.OpenVINOModel(os.path.join(folder, signatures.OPENVINO_DIR))
                return in_batches(lambda p: runner(p)["logits"], pixels)
        with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
            file.write(convert(logits.get_concrete_function(), int8=path == "litert_int8"))
            file.flush()
            lite = LiteRTModel(file.name)
        return in_batches(lambda p: lite(p)["logits"], pixels)

    digits = keras_vit.load_model(digits_model)
    images, labels = digits_test_split()
    digit_pixels = np.stack([eval_resize(i, digits.image_size, digits.crop_fraction).numpy() for i in images])
    photos = random_model("ViT_B16", classes=PHOTO_CLASSES)
    photo_pixels = np.stack([eval_resize(c, photos.image_size, photos.crop_fraction).numpy() for c in photo_crops()])
    np.savez(out, digits=logits_of(digits, digit_pixels), labels=labels, photos=logits_of(photos, photo_pixels))
    return {"written": out}


def in_batches(step, pixels: np.ndarray, size: int = 32) -> np.ndarray:
    """float32 outputs of `step` on `pixels`, `size` images at a time."""
    return np.concatenate([np.asarray(step(pixels[i:i + size]), np.float32) for i in range(0, len(pixels), size)])


def digits_test_split() -> tuple[np.ndarray, np.ndarray]:
    from keras_vit.training import datasets

    examples = list(datasets.load(datasets.describe("digits"), "test").as_numpy_iterator())
    return np.stack([e[0] for e in examples]), np.array([e[1] for e in examples])


def photo_crops() -> list[np.ndarray]:
    """PHOTO_CROPS square crops, 160 to 420 pixels, at random places in scikit-learn's two sample photos."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    crops = []
    for i in range(PHOTO_CROPS):
        photo = load_sample_images().images[i % 2]
        size = int(rng.integers(160, 421))
        top, left = (int(rng.integers(0, d - size + 1)) for d in photo.shape[:2])
        crops.append(photo[top:top + size, left:left + size])
    return crops


# --- The orchestrator -----------------------------------------------------------------------------


def train_digits_model(folder: str) -> str:
    from keras_vit.serving.demo import TRAIN_ARGS
    from keras_vit.training.outputs import MODEL

    harness.print_progress("training the demo's digits model (about 2 minutes)")
    subprocess.run([sys.executable, "-m", "keras_vit.training.train", *TRAIN_ARGS, "--epochs", "60", "--output_dir", folder,
                    "--progress", "0"], cwd=harness.ROOT, check=True, env=dict(os.environ, PYTHONPATH=harness.ROOT),
                   stdout=subprocess.DEVNULL)
    return os.path.join(folder, MODEL)


def accuracy_table(digits_model: str, paths: list[str]) -> str:
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as folder:
        logits = {}
        for path in paths:
            out = os.path.join(folder, f"{path}.npz")
            result = harness.run_worker(script, ["logits", path, digits_model, out])
            if "error" in result:
                harness.print_progress(f"{path}: {result['error']}")
                continue
            logits[path] = dict(np.load(out))
    reference = logits.get("keras")
    rows = []
    for path, got in logits.items():
        cells = [path]
        if reference is None:
            break
        accuracy = np.mean(got["digits"].argmax(-1) == got["labels"])
        for data in ("digits", "photos"):
            agreement = np.mean(got[data].argmax(-1) == reference[data].argmax(-1))
            error = np.abs(got[data] - reference[data]).max()
            spread = reference[data].std()
            cells += [f"{agreement:.1%}", f"{error:.3g} ({error / spread:.1%} of the logits' std)"]
        rows.append([cells[0], f"{accuracy:.2%}", *cells[1:]])
    header = ["path", "digits accuracy", "digits top-1 agreement", "digits max logit error",
              "photos top-1 agreement", "photos max logit error"]
    return harness.markdown_table(header, rows)


def speed_table(variants: list[str], batches: list[int], paths: list[str], rounds: int, seconds: float) -> str:
    script = os.path.abspath(__file__)
    rows = []
    for variant in variants:
        for batch in batches:
            def measure(path: str, _round: int) -> dict:
                return harness.run_worker(script, ["speed", path, variant, str(batch), str(seconds)])

            def report(path: str, r: int, result: dict) -> None:
                figure = f"{result['images_per_s']:.2f} images/s" if "images_per_s" in result else result["error"]
                harness.print_progress(f"round {r + 1}: {variant} batch {batch} {path}: {figure}")

            results = harness.alternate(paths, rounds, measure, report)
            speeds = {p: harness.median(results[p], "images_per_s") for p in paths}
            base = speeds.get("keras")
            cells = [f"{speeds[p]:.2f}" + (f" ({speeds[p] / base:.2f}x)" if base and p != "keras" else "")
                     if speeds[p] else f"n/a ({harness.first_error(results[p])})" for p in paths]
            rows.append([variant, str(batch), *cells])
    return harness.markdown_table(["model", "batch", *paths], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["ViT_B16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the table shows medians")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement, after warm-up")
    parser.add_argument("--digits_model", default=None, help="a .keras model trained on digits (default: train one)")
    parser.add_argument("--no_accuracy", dest="accuracy", action="store_false", help="speed only")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "speed":
            path, variant, batch, seconds = rest
            result = speed_worker(path, variant, int(batch), float(seconds))
        else:
            result = logits_worker(*rest)
        print(json.dumps(result))
        return 0

    print(harness.cpu_description())
    speeds = speed_table(args.variants, args.batches, args.paths, args.rounds, args.seconds)
    print(f"\nimages/s at {IMAGE_SIZE}x{IMAGE_SIZE}, medians of {args.rounds} alternating rounds (x: against keras float32)\n")
    print(speeds)
    if args.accuracy:
        with tempfile.TemporaryDirectory() as folder:
            digits_model = args.digits_model or train_digits_model(folder)
            print("\nagainst the float32 Keras model on the same inputs\n")
            # The float32 SavedModels compute the Keras model's graph (with and without XLA): their rows would only
            # show rounding (tests/test_xla_serving.py holds them to 1e-5).
            same = ("keras", "saved_model", "saved_model_xla")
            print(accuracy_table(digits_model, ["keras", *[p for p in args.paths if p not in same]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
