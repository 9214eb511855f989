"""Export a keras_vit model as a SavedModel that TensorFlow Serving serves unchanged.

    python -m keras_vit.serving.export --model runs/demo/model.keras --model_base_path models/vit [--version N] [--labels labels.txt]

Writes `<model_base_path>/<version>/` (the next integer when not given), with
`models.config` and `batching_parameters.txt` beside the versions for
`tensorflow_model_server`. `serving_default` takes encoded images (`images`,
DT_STRING [N]); `predict_pixels` takes `pixels`, DT_FLOAT [N, H, W, 3] in
[0, 255]. The whole contract: `keras_vit.serving.saved_model`.
"""

from __future__ import annotations

import json
import os
import sys

import keras_vit
from keras_vit import cli
from keras_vit.labels import labels_beside, read_labels
from keras_vit.options import DTYPE_POLICIES, EXPORT_FORMATS, OPENVINO_PRECISIONS
from keras_vit.serving.signatures import DEFAULT_SIGNATURE, OPENVINO_DIR, PIXELS_SIGNATURE, TFLITE_FILE


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m keras_vit.serving.export", __doc__)
    parser.add_argument("--model", required=True, help="a .keras file (e.g. runs/demo/model.keras)")
    parser.add_argument("--model_base_path", required=True, help="the model's folder; versions go below it")
    parser.add_argument("--version", type=int, default=None, help="default: the next integer")
    parser.add_argument("--labels", default=None,
                        help="a text file with one class name per line (default: labels.txt beside --model, if any)")
    parser.add_argument("--model_name", default=None, help="name in models.config (default: the folder's name)")
    parser.add_argument("--top_k", type=int, default=5, help="how many classes and scores to return")
    parser.add_argument("--dtype_policy", choices=DTYPE_POLICIES, default=None,
                        help="what the served graph computes in (default: the model's own); mixed_bfloat16 is fast where "
                             "the CPU has AVX512_BF16 or AMX, and slower where it has not (benchmarks/precision.py)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="saved_model",
                        help="tflite / tflite_int8 also write model.tflite (float32 / int8 weights and products), which "
                             "keras_vit.serving.server --prefer_tflite_model runs with LiteRT; openvino writes an OpenVINO "
                             "IR (openvino/), which --prefer_openvino_model runs (speeds per CPU: benchmarks/precision.py)")
    parser.add_argument("--precision", choices=OPENVINO_PRECISIONS, default=None,
                        help="--format openvino: f32 (default), bf16 (refused on a CPU without native bfloat16), or int8 "
                             "(NNCF, calibrated on --calibration_images and checked like tflite_int8)")
    parser.add_argument("--jit_compile", action="store_true",
                        help="compile the model's forward pass with XLA in the SavedModel; TF Serving and "
                             "keras_vit.serving.server then need --xla_cpu_compilation_enabled")
    parser.add_argument("--calibration_images", nargs="+", default=None, metavar="PATH",
                        help="--format tflite_int8, openvino --precision int8: image files or folders to check the int8 "
                             "model's top-1 agreement with the float32 one on, and OpenVINO's to calibrate on (default: "
                             "the export's two synthetic warm-up images)")
    parser.add_argument("--min_top1_agreement", type=float, default=0.99,
                        help="an int8 export: refuse it when the int8 model agrees less often than this")
    cli.add_image_size_flag(parser, "--serving_image_size", default=None, help="a model built with dynamic_image_size: the size serving_default decodes images to, and "
                             "the one size model.tflite takes (default: the model's image_size)")
    args = parser.parse_args(argv)
    try:
        size = cli.image_size_of(args.serving_image_size, "--serving_image_size")
    except ValueError as error:
        parser.error(str(error))
    try:
        cli.check_files(model=args.model, labels=args.labels, calibration_images=args.calibration_images)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from keras_vit.serving import quantization
    from keras_vit.serving.auto_export import AUTO_FILE
    from keras_vit.serving.saved_model import export, serving_size

    try:
        model = keras_vit.load_model(args.model)
        # The names the model was trained on travel by default; a headless model has no classes to name.
        labels_file = args.labels or (labels_beside(args.model) if model.include_top else None)
        labels = read_labels(labels_file) if labels_file else None
        path = export(model, args.model_base_path, args.version, labels, args.model_name, args.top_k, args.dtype_policy,
                      args.format, size, args.jit_compile, args.calibration_images, args.min_top1_agreement,
                      args.precision)
    except (ValueError, OSError) as error:  # bad flags, missing or unreadable files
        print(f"error: {_message(error)}", file=sys.stderr)
        return 2
    print(f"Exported {args.model} to {path}" + (f" with the class names of {labels_file}" if labels else "")
          + (f", computing in {args.dtype_policy}" if args.dtype_policy else "")
          + {"saved_model": "", "auto": ", in the fastest format that passed (below)",
             "openvino": f", with {OPENVINO_DIR}/ ({args.precision or 'f32'})"}.get(
              args.format, f", with {TFLITE_FILE} ({args.format})"))
    choice = os.path.join(path, AUTO_FILE)
    if os.path.exists(choice):
        with open(choice) as f:
            print(f.read().rstrip())
    report = os.path.join(path, quantization.REPORT_FILE)
    if os.path.exists(report):
        with open(report) as f:
            print("\n".join(quantization.QuantizationReport(**json.load(f)).lines()))
    if args.jit_compile:
        print("Its forward pass is compiled with XLA: serve it with --xla_cpu_compilation_enabled "
              "(tensorflow_model_server and serving.server alike); without it, requests are refused.")
    if getattr(model, "dynamic_image_size", False):
        height, width = serving_size(model, size)
        print(f"{PIXELS_SIGNATURE} takes pixels of any size that divides by the patch stride "
              f"{model.patch_stride[0]}x{model.patch_stride[1]}; {DEFAULT_SIGNATURE} decodes images to {height}x{width}"
              + {"saved_model": "", "auto": "",
                 "openvino": f"; {OPENVINO_DIR}/ takes {height}x{width} only (exported at one fixed size)"}.get(
                  args.format, f"; {TFLITE_FILE} takes {height}x{width} only (LiteRT runs one fixed size)"))
    return 0


def _message(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error)


if __name__ == "__main__":
    raise SystemExit(main())
