"""Clients of a TF Serving (or serving.server) model: REST and gRPC, image files in, top-k labels out.

    python -m keras_vit.serving.client predict cat.jpg --url http://127.0.0.1:8501 --model_name vit
    python -m keras_vit.serving.client predict cat.jpg --grpc 127.0.0.1:8500 --model_name vit
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Iterable

import numpy as np

from keras_vit import cli
from keras_vit.serving import signatures

Prediction = list[tuple[str, float]]  # (label or class index, probability), best first


class RestClient:
    """TF Serving's REST API: `POST /v1/models/<name>[/versions/<v>]:predict` with b64 images."""

    def __init__(self, url: str = "http://127.0.0.1:8501", model_name: str = "vit", version: int | None = None, timeout: float = 60):
        self.base = f"{url.rstrip('/')}/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
        self.timeout = timeout

    def predict_images(self, images: Iterable[bytes]) -> dict:
        """The raw `predictions` of encoded images, one object (probabilities, classes, scores[, labels]) each."""
        body = {"instances": [{"b64": base64.b64encode(image).decode()} for image in images]}
        return self._request(f"{self.base}:predict", body)["predictions"]

    def status(self) -> dict:
        return self._request(self.base)

    def wait_until_available(self, timeout: float = 120, process=None) -> None:
        """Polls the model's status until a version is AVAILABLE.

        Args:
            timeout: seconds before a RuntimeError.
            process: the server's `subprocess.Popen`, if this client started it: its exit ends the wait early.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"The server exited with code {process.returncode} before {self.base} was available.")
            try:
                versions = self.status().get("model_version_status", [])
                if any(v.get("state") == "AVAILABLE" for v in versions):
                    return
            except (OSError, RuntimeError):  # not listening yet, or no version loaded yet
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.base} did not become available within {timeout:.0f}s.")

    def metadata(self) -> dict:
        return self._request(f"{self.base}/metadata")

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError):
                pass
            raise RuntimeError(f"HTTP {error.code} from {url}: {detail}") from None


class GrpcClient:
    """TF Serving's PredictionService over gRPC, with the stubs of tensorflow-serving-api."""

    def __init__(self, address: str = "127.0.0.1:8500", model_name: str = "vit", version: int | None = None, timeout: float = 60):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.version, self.timeout = model_name, version, timeout

    def predict_images(self, images: Iterable[bytes]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signatures.DEFAULT_SIGNATURE
        if self.version:
            request.model_spec.version.value = self.version
        request.inputs[signatures.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
        response = self.stub.Predict(request, timeout=self.timeout)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self) -> None:
        self.channel.close()


def top_k(prediction: dict) -> Prediction:
    """[(label, score)] of one prediction (REST object or a row of gRPC outputs)."""
    names = prediction.get(signatures.LABELS, prediction[signatures.CLASSES])
    scores = prediction[signatures.SCORES]
    return [(n.decode() if isinstance(n, bytes) else str(n), float(s)) for n, s in zip(names, scores)]


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m keras_vit.serving.client", __doc__, verbose=False)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="print the top-k labels of image files", formatter_class=cli.HelpFormatter)
    cli.add_verbose_flag(predict)
    predict.add_argument("images", nargs="+", help="JPEG/PNG files")
    predict.add_argument("--url", default="http://127.0.0.1:8501", help="REST base URL")
    predict.add_argument("--grpc", default=None, help="host:port: use gRPC instead of REST")
    predict.add_argument("--model_name", default="vit", help="served model name")
    predict.add_argument("--version", type=int, default=None, help="a specific version (default: latest)")
    args = parser.parse_args(argv)

    images = []
    for path in args.images:
        try:
            with open(path, "rb") as f:
                images.append(f.read())
        except OSError as error:
            print(f"error: {path}: {error.strerror}", file=sys.stderr)
            return 2
    try:
        if args.grpc:
            client = GrpcClient(args.grpc, args.model_name, args.version)
            outputs = client.predict_images(images)
            rows = [{k: v[i] for k, v in outputs.items()} for i in range(len(images))]
        else:
            rows = RestClient(args.url, args.model_name, args.version).predict_images(images)
    except Exception as error:  # network and server errors, reported plainly
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, row in zip(args.images, rows):
        print(path + ": " + ", ".join(f"{label} {score:.3f}" for label, score in top_k(row)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
