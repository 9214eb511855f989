"""The end-to-end demo, offline: train on digits, export, serve, query over REST, compare.

    python -m keras_vit.serving.demo

1. `python -m keras_vit.training.train` trains a small ViT on scikit-learn's digits;
2. `python -m keras_vit.serving.export` writes a TF Serving SavedModel;
3. `python -m keras_vit.serving.server` serves it on 127.0.0.1;
4. the 360 test digits go to `:predict` as PNG bytes over REST (and one batch
   over gRPC), and the REST accuracy is compared with the in-process one;
5. the server is stopped with SIGTERM;
6. `python -m keras_vit.analysis report` draws what the model learned (the
   paper's Figures 6 and 7) into OUTPUT_DIR/report/index.html.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from keras_vit import cli
from keras_vit.serving import signatures
from keras_vit.serving.client import RestClient
from keras_vit.training import outputs
from keras_vit.training.config import DEMO_MODEL, DEMO_TRAINING, as_flags

# A ViT small enough to train in a couple of minutes on 2 CPU cores: 16x16 inputs, 4x4 patches (16 tokens).
TRAIN_ARGS = as_flags(**DEMO_MODEL, **DEMO_TRAINING)


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m keras_vit.serving.demo", __doc__)
    parser.add_argument("--output_dir", default="runs/demo", help="training run folder")
    parser.add_argument("--model_base_path", default="models/vit", help="export folder (a version is added)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs")
    parser.add_argument("--reuse", action="store_true", help="reuse output_dir/model.keras if it exists")
    parser.add_argument("--batch", type=int, default=40, help="images per REST request")
    parser.add_argument("--port", type=int, default=8500, help="the server's gRPC port (TF Serving's default)")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="the server's REST port (TF Serving's default)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    model_path = os.path.join(args.output_dir, outputs.MODEL)
    if not (args.reuse and os.path.exists(model_path)):
        _step(f"1/6 training on digits ({args.epochs} epochs)")
        _run("keras_vit.training.train", *TRAIN_ARGS, "--epochs", str(args.epochs), "--output_dir", args.output_dir,
             "--progress", "2")
    train_seconds = time.perf_counter() - started

    _step("2/6 exporting for TensorFlow Serving")
    _run("keras_vit.serving.export", "--model", model_path, "--model_base_path", args.model_base_path)  # labels travel

    rest_port, grpc_port = args.rest_api_port, args.port
    _step(f"3/6 starting serving.server (REST 127.0.0.1:{rest_port}, gRPC 127.0.0.1:{grpc_port})")
    server = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_name", "vit", "--model_base_path", args.model_base_path, "--enable_batching"],
    )
    try:
        RestClient(f"http://127.0.0.1:{rest_port}", "vit").wait_until_available(process=server)
        _step("4/6 querying: the test digits as PNG bytes over REST")
        report = _query(model_path, rest_port, grpc_port, args.batch)
    finally:
        _step("5/6 stopping the server (SIGTERM)")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    report_dir = os.path.join(args.output_dir, "report")
    _step("6/6 drawing what the model learned: attention rollout, attention distance, position embeddings, filters")
    _run("keras_vit.analysis", "report", "--model", model_path, "--dataset", "digits", "--out", report_dir)

    report["server_exit_code"] = server.returncode
    report["train_seconds"] = round(train_seconds, 1)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    same = report["rest_correct"] == round(report["in_process_accuracy"] * report["examples"])
    ok = same and report["grpc_matches_rest"]
    print(
        f"\nREST accuracy {report['rest_accuracy']:.2%} on {report['examples']} test digits "
        f"(in-process {report['in_process_accuracy']:.2%}): {'equal' if ok else 'MISMATCH'}"
    )
    print(f"What the model learned, as the paper's Figures 6 and 7: {os.path.join(report_dir, 'index.html')}")
    return 0 if ok and server.returncode == 0 else 1


def _query(model_path: str, rest_port: int, grpc_port: int, batch: int) -> dict:
    import keras_vit
    from keras_vit.serving.client import GrpcClient
    from keras_vit.serving.saved_model import encode_png
    from keras_vit.training import datasets
    from keras_vit.training.evaluate import evaluate

    info = datasets.describe("digits")
    images, labels = [], []
    for image, label in datasets.load(info, "test").as_numpy_iterator():
        images.append(encode_png(image))
        labels.append(int(label))
    rest = RestClient(f"http://127.0.0.1:{rest_port}", "vit")
    start = time.perf_counter()
    predicted = []
    for i in range(0, len(images), batch):
        predicted += [int(p[signatures.CLASSES][0]) for p in rest.predict_images(images[i:i + batch])]
    rest_seconds = time.perf_counter() - start
    grpc = GrpcClient(f"127.0.0.1:{grpc_port}", "vit")
    grpc_classes = grpc.predict_images(images[:batch])[signatures.CLASSES][:, 0].tolist()
    grpc.close()
    model = keras_vit.load_model(model_path)
    in_process = evaluate(model, info, "test")
    correct = int(np.sum(np.asarray(predicted) == np.asarray(labels)))
    return {
        "examples": len(labels),
        "rest_correct": correct,
        "rest_accuracy": correct / len(labels),
        "in_process_accuracy": in_process["accuracy"],
        "grpc_matches_rest": grpc_classes == predicted[:batch],
        "rest_requests": -(-len(images) // batch),
        "rest_seconds": round(rest_seconds, 2),
    }


def _run(module: str, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, *args])
    if result.returncode:
        raise SystemExit(f"python -m {module} failed with exit code {result.returncode}")


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
