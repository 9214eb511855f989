"""The REST API of TensorFlow Serving on Starlette: the same paths, bodies, status codes and error documents."""

from __future__ import annotations

import logging
import re

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from keras_vit.serving import json_codec
from keras_vit.serving.metrics import metrics
from keras_vit.serving.errors import ServingError, invalid_argument, not_found
from keras_vit.serving.model_manager import ModelManager
from keras_vit.serving import protos

logger = logging.getLogger(__name__)

# The two path patterns of tensorflow_serving/model_servers/http_rest_api_util.cc; versions are ASCII digits.
PREDICTION_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
#: Versions are int64 in TF Serving.
MAX_VERSION = 2**63 - 1
#: Every method is answered with a JSON document, as TF Serving's handler answers them.
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


#: The media type of Prometheus' text format.
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def make_app(
    manager: ModelManager, num_threads: int = 32, max_request_bytes: int = 64 << 20, metrics_path: str | None = None
) -> Starlette:
    """The ASGI app. Model work runs on a pool of `num_threads` threads, off the event loop.

    `metrics_path` (from `--monitoring_config_file`) serves the Prometheus metrics (`keras_vit.serving.metrics`).
    """
    limiter = anyio.CapacityLimiter(num_threads)

    async def handle(request: Request) -> Response:
        path = request.url.path
        try:
            if "content-length" in request.headers and "transfer-encoding" in request.headers:
                # Request smuggling's signature (RFC 9112 6.3): refuse, and close the connection.
                return _json(400, {"error": "Both Content-Length and Transfer-Encoding given."}, close=True)
            if request.method == "GET" and metrics_path is not None and path == metrics_path:
                return Response(metrics().text(), media_type=PROMETHEUS_TEXT)
            if request.method == "POST" and (match := PREDICTION_PATH.fullmatch(path)):
                name, version, label, method = match.groups()
                with metrics().request(name, method.lower(), "REST"):
                    body = await _read_body(request, max_request_bytes)
                    document = await anyio.to_thread.run_sync(
                        _post, manager, name, _version(version), label, method.lower(), body, limiter=limiter
                    )
                return _json(200, document)
            if request.method == "GET" and (match := STATUS_PATH.fullmatch(path)):
                name, version, label, metadata = match.groups()
                if not name:
                    raise invalid_argument("Missing model name in request.")
                if metadata:
                    with metrics().request(name, "GetModelMetadata", "REST"):
                        document = protos.metadata_json(manager.get(name, _version(version), label))
                    return _json(200, document)
                return _json(200, protos.status_json(manager, name, _version(version), label))
            raise not_found(f"Malformed request: {request.method} {path}")
        except ServingError as error:
            return _json(error.http_status, {"error": error.message})
        except Exception as error:  # a bug must cost one request, not the server
            logger.exception("Internal error on %s %s", request.method, path)
            return _json(500, {"error": f"Internal: {type(error).__name__}: {error}"})

    async def unrouted(request: Request, _exc) -> Response:  # e.g. absolute-form targets
        return _json(404, {"error": f"Malformed request: {request.method} {request.url.path}"})

    return Starlette(routes=[Route("/{path:path}", handle, methods=METHODS)], exception_handlers={404: unrouted, 405: unrouted})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk and refused as soon as it passes `limit` (also when chunked or lying)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ServingError("RESOURCE_EXHAUSTED", f"Request body of {declared} bytes exceeds the limit of {limit}.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServingError("RESOURCE_EXHAUSTED", f"Request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:  # closed by the client, or by the body deadline: the answer goes nowhere
        logger.info("%s %s: the connection closed before the request body arrived", request.method, request.url.path)
        raise ServingError("CANCELLED", "The connection closed before the request body arrived.") from None
    return b"".join(chunks)


def _post(manager: ModelManager, name: str, version: int | None, label: str | None, method: str, body: bytes) -> dict:
    doc = json_codec.parse_body(body)
    servable = manager.get(name, version, label)
    signature_name = doc.get("signature_name", "")
    if method != "predict":  # our exports hold predict signatures only
        servable.refuse(signature_name, method)
    _, signature = servable.signature(signature_name)
    inputs, fmt = json_codec.decode_predict_request(doc, signature.inputs)
    return json_codec.encode_predict_response(servable.predict(signature_name, inputs), fmt)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if len(text) > 19 or int(text) > MAX_VERSION:
        raise invalid_argument(f"Version {text[:30]}{'...' if len(text) > 30 else ''} is not an int64.")
    return int(text)


def _json(status: int, document, close: bool = False) -> Response:
    """A JSON answer: `document` as it is when already a JSON text (status and metadata, from protobuf's writer)."""
    headers = {"Connection": "close"} if close else None
    body = document if isinstance(document, str) else json_codec.dumps(document)
    return Response(body, status_code=status, media_type="application/json", headers=headers)
