"""The REST server against hostile clients: every answer is TF Serving's JSON error document, and it keeps serving."""

import base64
import http.client
import io
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib

import grpc
import pytest
from PIL import Image

from keras_vit.serving import saved_model, image_limits
from keras_vit.serving.client import GrpcClient
from support import REPO, env, free_port
from test_serving import assert_still_serving, exported, server, tiny_model  # noqa: F401  (the module's served models)

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers
#: The server runs the version's SavedModel here (test_serving.py and test_connections.py its OpenVINO model).
SERVER_FLAGS = []


def request(server, method, path, body=None, headers=None, chunked=False):
    url = urllib.parse.urlsplit(server["rest"])
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def raw(server, data: bytes) -> bytes:
    url = urllib.parse.urlsplit(server["rest"])
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def json_error(status, content_type, body):
    assert content_type == "application/json", (status, content_type, body[:200])
    return json.loads(body)["error"]


def test_a_chunked_body_over_the_limit_is_refused_while_read(server, exported):
    def chunks():  # 3 MB against the fixture's 2 MB limit, with no Content-Length to check first
        for _ in range(48):
            yield b"x" * 65536
    status, content_type, body = request(server, "POST", "/v1/models/vit:predict", body=chunks(), chunked=True)
    assert status == 429 and "exceeds the limit of 2000000 bytes" in json_error(status, content_type, body)
    assert_still_serving(server, exported)


@pytest.mark.parametrize("body, message", [
    (b"[" * 10_000 + b"]" * 10_000, "nests too deeply"),
    (b'{"instances": [' + b"7" * 5000 + b"]}", "JSON Parse error: Number too big to be stored in double"),  # RapidJSON's
    (b'{"instances": [1e400]}', "JSON Parse error: Number too big to be stored in double"),
    (b'{"instances": ["\\ud800"]}', "surrogate"),
])
def test_malformed_json_is_a_400_without_a_traceback(server, exported, body, message):
    status, content_type, answer = request(server, "POST", "/v1/models/vit:predict", body=body,
                                           headers={"Content-Type": "application/json"})
    assert status == 400 and message in json_error(status, content_type, answer)
    assert_still_serving(server, exported)


B64 = {"b64": base64.b64encode(b"not decoded: the rows are refused first").decode()}


def nested(levels: int, leaf) -> list:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("levels, message", [(500, "nests too deeply: 50"), (6, "more than the input's rank allows")],
                         ids=["deep", "past-the-rank"])
@pytest.mark.parametrize("document", [
    lambda n: {"signature_name": "predict_pixels", "inputs": nested(n, 0.0)},
    lambda n: {"signature_name": "predict_pixels", "inputs": {"pixels": nested(n, 0.0)}},
    lambda n: {"signature_name": "predict_pixels", "instances": nested(n, 0.0)},
    lambda n: {"signature_name": "predict_pixels", "instances": [{"pixels": nested(n - 1, 0.0)}]},
    lambda n: {"inputs": nested(n, B64)},
    lambda n: {"instances": nested(n, {"images": B64})},
], ids=["columnar-list", "columnar-object", "row-values", "row-objects", "columnar-b64", "row-b64-objects"])
def test_nesting_past_the_signature_is_a_400_in_every_json_path(server, exported, document, levels, message):
    body = json.dumps(document(levels)).encode()
    status, content_type, answer = request(server, "POST", "/v1/models/vit:predict", body=body,
                                           headers={"Content-Type": "application/json"})
    assert status == 400, answer[:300]
    error = json_error(status, content_type, answer)
    assert message in error or "Expecting object but got list" in error, error
    assert_still_serving(server, exported)


@pytest.mark.parametrize("instances, message", [  # json_tensor.cc's row-format rules, with its messages
    ([{"images": B64, "extra": 1}],
     "Failed to process element: 0 key: extra of 'instances' list. Error: INVALID_ARGUMENT: JSON object: "
     "does not have named input: extra"),
    ([{"pixels": [[[0.0]]]}], "does not have named input: pixels"),
    ([{}], "Failed to process element: 0 of 'instances' list. JSON object: {} keys must be equal to: images"),
    ([B64, {"images": B64}], "Expecting value/list but got object at item 1 of input list"),
    ([{"images": B64}, B64], "Expecting object but got list at item 1 of input list"),
    ([{"images": B64}, "plain"], "Expecting object but got list at item 1 of input list"),
])
def test_row_format_objects_and_values_follow_tf_serving(server, exported, instances, message):
    status, content_type, answer = request(server, "POST", "/v1/models/vit:predict",
                                           body=json.dumps({"instances": instances}).encode(),
                                           headers={"Content-Type": "application/json"})
    assert status == 400 and message in json_error(status, content_type, answer)
    assert_still_serving(server, exported)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/models/vit/versions/" + "9" * 5000, 400),  # not an int64
    ("GET", "/v1/models/vit/versions/%D9%A1", 404),  # ARABIC-INDIC DIGIT ONE names no version
    ("PUT", "/v1/models/vit:predict", 404),
    ("DELETE", "/v1/models/vit", 404),
    ("PATCH", "/v1/models/vit", 404),
])
def test_odd_methods_and_versions_get_json_errors(server, method, path, status):
    answer = request(server, method, path)
    assert answer[0] == status and json_error(*answer)


def test_absolute_form_targets_and_smuggling_headers(server, exported):
    port = urllib.parse.urlsplit(server["rest"]).port
    absolute = raw(server, f"GET http://127.0.0.1:{port}/v1/models/vit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = absolute.partition(b"\r\n\r\n")
    assert b"application/json" in head and json.loads(body)
    both = raw(server, b"POST /v1/models/vit:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert both.startswith(b"HTTP/1.1 400")
    assert_still_serving(server, exported)


def test_a_version_folder_with_a_non_ascii_digit_is_ignored_and_polling_goes_on(server, exported):
    (exported["root"] / "swap" / "\u00b2").mkdir()  # "²".isdigit() is True, int("²") fails
    saved_model.export(tiny_model(7), str(exported["root"] / "swap"))  # version 2, found only if polling goes on
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, body = request(server, "GET", "/v1/models/swap")
        if status == 200 and [v["version"] for v in json.loads(body)["model_version_status"]] == ["2"]:
            break
        time.sleep(0.25)
    else:
        pytest.fail(f"version 2 of swap was never served: {body[:300]}")
    assert_still_serving(server, exported)


def test_a_config_file_that_does_not_parse_is_one_line(tmp_path):
    config = tmp_path / "models.config"
    config.write_text('model_config_list {\n  config { nme: "vit" }\n}\n')
    result = subprocess.run(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(free_port()), "--model_config_file", str(config)],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f'error: {config}:2:12 : Message type "tensorflow.serving.ModelConfig" has no field named "nme".']
    assert "Traceback" not in result.stderr


def png_bomb(side: int = 23000) -> bytes:
    """A real 1-bit PNG of side x side black pixels: about 64 KB on disk, 1.6 GB as the RGB tensor it decodes to."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (side + 7) // 8)
    pixels = zlib.compress(row * side, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "JPEG"])
def test_image_sizes_are_read_from_headers(fmt):
    data = io.BytesIO()
    Image.new("RGB", (123, 45)).save(data, fmt)
    assert image_limits.image_size(data.getvalue()) == (123, 45)


def test_a_decompression_bomb_is_refused_undecoded_over_rest_and_grpc(server, exported):
    bomb = png_bomb()
    assert len(bomb) < 100_000 and image_limits.image_size(bomb) == (23000, 23000)
    status, content_type, body = request(server, "POST", "/v1/models/vit:predict",
                                         body=json.dumps({"instances": [{"b64": base64.b64encode(bomb).decode()}]}))
    assert status == 400 and "declares 23000x23000 = 529,000,000 pixels" in json_error(status, content_type, body)
    with pytest.raises(grpc.RpcError) as raised:
        GrpcClient(server["grpc"], "vit").predict_images([bomb])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "over the server's limit" in raised.value.details()
    assert_still_serving(server, exported)


def grpc_predict_error(server, proto, signature="predict_pixels", name="pixels"):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest(model_spec={"name": "vit", "signature_name": signature})
    request.inputs[name].CopyFrom(proto)
    with grpc.insecure_channel(server["grpc"]) as channel:
        with pytest.raises(grpc.RpcError) as error:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    return error.value.code(), error.value.details()


def test_grpc_compact_tensors_and_dtypes_are_checked_before_they_expand(server, exported):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    def proto(dtype, shape, **values):
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
        return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **values)

    # 50 bytes declaring 245 MB (and 10^8 images): refused before anything is allocated.
    for shape in ([20000, 32, 32, 3], [10**8, 16, 16, 3]):
        code, details = grpc_predict_error(server, proto(types_pb2.DT_FLOAT, shape, float_val=[1.0]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "expands to" in details and "more than the limit" in details
    # No silent casts, as TF Serving: the signature takes float.
    for dtype, name in [(types_pb2.DT_INT32, "int32"), (types_pb2.DT_DOUBLE, "double"), (types_pb2.DT_HALF, "float16"),
                        (types_pb2.DT_BOOL, "bool"), (types_pb2.DT_VARIANT, "variant"), (types_pb2.DT_RESOURCE, "resource")]:
        code, details = grpc_predict_error(server, proto(dtype, [1, 16, 16, 3]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, details)
        assert f"Expects input 'pixels' to be float but {name} is provided" in details
    code, details = grpc_predict_error(
        server, proto(types_pb2.DT_STRING, [10**8], string_val=[b"png"]), signature="", name="images"
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "expands to" in details  # strings are padded too
    code, details = grpc_predict_error(server, tf.make_tensor_proto([1.0]), signature="", name="images")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "to be string but float is provided" in details
    code, details = grpc_predict_error(server, proto(types_pb2.DT_FLOAT, [-1, 16, 16, 3]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no fully defined shape" in details
    assert_still_serving(server, exported)
