"""The REST API of TensorFlow Serving on Starlette: the same paths, bodies, status codes and error documents."""

from __future__ import annotations

import json
import logging
import re

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import json_codec
from serving.errors import ServingError, invalid_argument, not_found
from serving.model_manager import ModelManager
from serving import protos

logger = logging.getLogger(__name__)

# The two path patterns of tensorflow_serving/model_servers/http_rest_api_util.cc.
PREDICTION_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")


def make_app(manager: ModelManager, num_threads: int = 32, max_request_bytes: int = 64 << 20) -> Starlette:
    """The ASGI app. Model work runs on a pool of `num_threads` threads, off the event loop."""
    limiter = anyio.CapacityLimiter(num_threads)

    async def handle(request: Request) -> Response:
        path = request.url.path
        try:
            if request.method == "POST" and (match := PREDICTION_PATH.fullmatch(path)):
                declared = int(request.headers.get("content-length") or 0)
                if declared > max_request_bytes:
                    raise ServingError("RESOURCE_EXHAUSTED", f"Request body of {declared} bytes exceeds the limit of {max_request_bytes}.")
                body = await request.body()
                if len(body) > max_request_bytes:
                    raise ServingError("RESOURCE_EXHAUSTED", f"Request body of {len(body)} bytes exceeds the limit of {max_request_bytes}.")
                name, version, label, method = match.groups()
                document = await anyio.to_thread.run_sync(
                    _post, manager, name, _version(version), label, method.lower(), body, limiter=limiter
                )
                return _json(200, document)
            if request.method == "GET" and (match := STATUS_PATH.fullmatch(path)):
                name, version, label, metadata = match.groups()
                if not name:
                    raise invalid_argument("Missing model name in request.")
                if metadata:
                    return _json(200, protos.metadata_json(manager.get(name, _version(version), label)))
                return _json(200, protos.status_json(manager, name, _version(version), label))
            raise not_found(f"Malformed request: {request.method} {path}")
        except ServingError as error:
            return _json(error.http_status, {"error": error.message})
        except Exception as error:  # a bug must cost one request, not the server
            logger.exception("Internal error on %s %s", request.method, path)
            return _json(500, {"error": f"Internal: {type(error).__name__}: {error}"})

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


def _post(manager: ModelManager, name: str, version: int | None, label: str | None, method: str, body: bytes) -> str | dict:
    doc = json_codec.parse_body(body)
    servable = manager.get(name, version, label)
    signature_name = doc.get("signature_name", "")
    if method != "predict":  # our exports hold predict signatures only
        servable.refuse(signature_name, method)
    _, signature = servable.signature(signature_name)
    inputs, fmt = json_codec.decode_predict_request(doc, signature.inputs)
    return json_codec.encode_predict_response(servable.predict(signature_name, inputs), fmt)


def _version(text: str | None) -> int | None:
    return None if text is None else int(text)


def _json(status: int, document) -> Response:
    if isinstance(document, str):
        return Response(document, status_code=status, media_type="application/json")
    return Response(json.dumps(document, indent=2), status_code=status, media_type="application/json")
