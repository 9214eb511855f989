"""Export and serving: a real server process on 127.0.0.1, queried over REST and gRPC."""

import base64
import concurrent.futures
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import keras
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

import keras_vit
from harness import randomize
from keras_vit.serving import saved_model
from keras_vit.serving.client import GrpcClient, RestClient
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers
#: TF Serving's REST contract, answered by the version's OpenVINO model (`--prefer_openvino_model`).
SERVER_FLAGS = ["--prefer_openvino_model"]

LABELS = ["cat", "dog", "bird"]
SIZE = 16


def tiny_model(seed: int) -> keras.Model:
    model = keras_vit.ViT(image_size=SIZE, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=3)
    randomize(model, seed)
    for v in model.head.weights:  # confident, distinct answers per image
        v.assign(np.random.default_rng(seed).normal(0, 2.0, v.shape).astype("float32"))
    return model


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def expected_probabilities(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    logits = model(pixels.astype("float32") / 127.5 - 1.0, training=False)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def b64_png(pixels: np.ndarray) -> dict:
    return {"b64": base64.b64encode(saved_model.encode_png(pixels)).decode()}


def post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = tiny_model(1)
    # With its OpenVINO IR beside the SavedModel: this module and test_connections.py serve the OpenVINO model
    # (SERVER_FLAGS), test_rest_limits.py the SavedModel, behind the same contract.
    path = saved_model.export(model, str(root / "vit"), labels=LABELS, format="openvino")
    swap_v1 = tiny_model(2)
    saved_model.export(swap_v1, str(root / "swap"))
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "vit" base_path: "{root / "vit"}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "swap" base_path: "{root / "swap"}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    return {"root": root, "model": model, "path": path, "swap_v1": swap_v1, "config": config}


@pytest.fixture(scope="module")
def server(exported, request):
    """The server of `exported`, with the using module's `SERVER_FLAGS` (e.g. `--prefer_openvino_model`)."""
    rest_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_config_file", str(exported["config"]), "--enable_batching",
         "--batching_parameters_file", str(exported["root"] / "vit" / "batching_parameters.txt"),
         "--file_system_poll_wait_seconds", "0.5", "--max_request_bytes", "2000000",
         *getattr(request.module, "SERVER_FLAGS", [])],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{rest_port}"
    for name in ("vit", "swap"):
        RestClient(base, name).wait_until_available(process=process)
    yield {"rest": base, "grpc": f"127.0.0.1:{grpc_port}", "process": process}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def assert_still_serving(server, exported):
    pixels = images(1, seed=99)
    status, body = post(f"{server['rest']}/v1/models/vit:predict", {"instances": [b64_png(pixels[0])]})
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"][0]["probabilities"], expected_probabilities(exported["model"], pixels)[0], atol=1e-5)


def test_saved_model_cli_shows_the_signatures(exported):
    result = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", exported["path"], "--all"],
        capture_output=True, text=True, env=env(), timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    default = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['images'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in default
    assert "outputs['probabilities'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 3)" in default
    assert "outputs['classes'] tensor_info:\n        dtype: DT_INT64\n        shape: (-1, 3)" in default
    assert "outputs['labels'] tensor_info:\n        dtype: DT_STRING" in default
    assert "Method name is: tensorflow/serving/predict" in default
    pixels = text.split("signature_def['predict_pixels']")[1].split("signature_def[")[0]
    assert "inputs['pixels'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 16, 16, 3)" in pixels


def test_export_layout_warmup_and_config_files(exported):
    vit = exported["root"] / "vit"
    assert sorted(p.name for p in vit.iterdir()) == ["1", "batching_parameters.txt", "models.config"]
    records = list(tf.data.TFRecordDataset(str(vit / "1" / saved_model.WARMUP_FILE)).as_numpy_iterator())
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert log.predict_log.request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(log.predict_log.request.inputs["images"]).shape == (1,)
    assert 'base_path: "' + str(vit) + '"' in (vit / "models.config").read_text()
    assert saved_model.next_version(str(vit)) == 2
    with pytest.raises(ValueError, match="Version 1 already exists"):
        saved_model.export(exported["model"], str(vit), version=1)


def test_rest_row_format_equals_in_process_predictions(server, exported):
    pixels = images(5)
    status, body = post(f"{server['rest']}/v1/models/vit:predict", {"instances": [b64_png(p) for p in pixels]})
    assert status == 200, body
    expected = expected_probabilities(exported["model"], pixels)
    got = np.array([p["probabilities"] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for prediction, row in zip(body["predictions"], expected):
        assert prediction["classes"][0] == int(row.argmax())
        assert prediction["labels"][0] == LABELS[int(row.argmax())]
        np.testing.assert_allclose(prediction["scores"], np.sort(row)[::-1], atol=1e-5)


def test_columnar_format_and_pixel_signature(server, exported):
    pixels = images(3, seed=4)
    row = post(f"{server['rest']}/v1/models/vit:predict", {"instances": [b64_png(p) for p in pixels]})[1]
    status, columnar = post(f"{server['rest']}/v1/models/vit/versions/1:predict", {"inputs": [b64_png(p) for p in pixels]})
    assert status == 200, columnar
    np.testing.assert_allclose(columnar["outputs"]["probabilities"], [p["probabilities"] for p in row["predictions"]], atol=1e-6)
    assert columnar["outputs"]["labels"] == [p["labels"] for p in row["predictions"]]

    status, body = post(
        f"{server['rest']}/v1/models/vit:predict",
        {"signature_name": "predict_pixels", "instances": pixels.astype(float).tolist()},
    )
    assert status == 200, body
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], expected_probabilities(exported["model"], pixels), atol=1e-5)
    status, body = post(
        f"{server['rest']}/v1/models/vit:predict",
        {"signature_name": "predict_pixels", "inputs": {"pixels": pixels.astype(float).tolist()}},
    )
    assert status == 200 and np.array(body["outputs"]["probabilities"]).shape == (3, 3)


def test_grpc_predict_equals_rest(server, exported):
    pixels = images(4, seed=5)
    client = GrpcClient(server["grpc"], "vit")
    outputs = client.predict_images([saved_model.encode_png(p) for p in pixels])
    client.close()
    np.testing.assert_allclose(outputs["probabilities"], expected_probabilities(exported["model"], pixels), atol=1e-5)
    assert [list(map(bytes.decode, row)) for row in outputs["labels"]] == [
        [LABELS[i] for i in row] for row in outputs["classes"]
    ]
    rest = RestClient(server["rest"], "vit").predict_images([saved_model.encode_png(p) for p in pixels])
    np.testing.assert_allclose(outputs["scores"], [p["scores"] for p in rest], atol=1e-6)


def test_grpc_status_metadata_and_errors(server):
    channel = grpc.insecure_channel(server["grpc"])
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "vit"}), timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    metadata = predictions.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "vit"}, metadata_field=["signature_def"]), timeout=30
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "predict_pixels"} <= set(signatures.signature_def)
    assert metadata.model_spec.version.value == 1

    request = predict_pb2.PredictRequest(model_spec={"name": "nope"})
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([b"x"]))
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    request.model_spec.name = "vit"
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Unknown image file format" in error.value.details()
    channel.close()


def test_rest_status_and_metadata_documents(server):
    status, body = get(f"{server['rest']}/v1/models/vit")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert get(f"{server['rest']}/v1/models/vit/versions/1")[1] == body
    status, metadata = get(f"{server['rest']}/v1/models/vit/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "vit", "signature_name": "", "version": "1"}
    default = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["images"]["dtype"] == "DT_STRING"
    assert default["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"] == "3"


BAD_REQUESTS = [
    ("vit:predict", b'{"instances": [', 400, "JSON Parse error"),
    ("vit:predict", {"instances": [], "inputs": []}, 400, "expecting only one of 'inputs' or 'instances'"),
    ("vit:predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
    ("vit:predict", {"instances": "x"}, 400, "Expecting 'instances' to be an list/array"),
    ("vit:predict", {"instances": [{"b64": "!!notbase64!!"}]}, 400, "Unable to base64 decode"),
    ("vit:predict", {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}, 400, "Unknown image file format"),
    ("vit:predict", {"instances": [1.5]}, 400, "is not of expected type: string"),
    ("vit:predict", {"signature_name": "predict_pixels", "instances": [[[[1.0, 2.0, 3.0]]]]}, 400, "expecting shape [-1,16,16,3]"),
    ("vit:predict", {"signature_name": "predict_pixels", "instances": [[[1.0, 2.0], [1.0]]]}, 400, "Ragged"),
    ("vit:predict", {"signature_name": "predict_pixels", "instances": [[["a"]]]}, 400, "is not of expected type: float"),
    ("vit:predict", {"signature_name": "nope", "instances": [1]}, 400, 'Serving signature name: "nope" not found'),
    ("vit:classify", {"examples": []}, 400, "Expected classification signature method_name"),
    ("vit:regress", {"examples": []}, 400, "Expected regression signature method_name"),
    ("nope:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(nope)"),
    ("vit/versions/7:predict", {"instances": [1]}, 404, "Servable not found for request: Specific(vit, 7)"),
    ("vit:predict", {"instances": ["x" * 2_100_000]}, 429, "exceeds the limit"),
]


@pytest.mark.parametrize("path, body, code, message", BAD_REQUESTS, ids=[m for *_, m in BAD_REQUESTS])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(path, body, code, message, server, exported):
    status, answer = post(f"{server['rest']}/v1/models/{path}", body)
    assert status == code, answer
    assert message in answer["error"]
    assert_still_serving(server, exported)


def test_status_of_unknown_model_is_404(server):
    status, body = get(f"{server['rest']}/v1/models/nope")
    assert status == 404 and "nope" in body["error"]


def test_concurrent_clients_get_their_own_answers(server, exported):
    pixels = images(8, seed=7)
    expected = expected_probabilities(exported["model"], pixels)

    def client(i: int) -> int:
        failures = 0
        for _ in range(25):
            status, body = post(f"{server['rest']}/v1/models/vit:predict", {"instances": [b64_png(pixels[i])]})
            if status != 200 or not np.allclose(body["predictions"][0]["probabilities"], expected[i], atol=1e-5):
                failures += 1
        return failures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        failures = list(pool.map(client, range(8)))
    assert failures == [0] * 8


def test_new_version_under_load_is_picked_up_without_failures(server, exported):
    url = f"{server['rest']}/v1/models/swap:predict"
    pixels = images(1, seed=11)
    body = {"instances": [b64_png(pixels[0])]}
    old = expected_probabilities(exported["swap_v1"], pixels)[0]
    new_model = tiny_model(3)
    new = expected_probabilities(new_model, pixels)[0]
    stop = time.monotonic() + 90
    results = {"ok": 0, "failed": 0, "old": 0, "new": 0}

    def load():
        while time.monotonic() < stop and results["new"] < 20:
            status, answer = post(url, body)
            if status != 200:
                results["failed"] += 1
                continue
            results["ok"] += 1
            got = np.array(answer["predictions"][0]["probabilities"])
            results["old" if np.allclose(got, old, atol=1e-5) else "new" if np.allclose(got, new, atol=1e-5) else "failed"] += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        time.sleep(1.0)
        saved_model.export(new_model, str(exported["root"] / "swap"))
        for f in futures:
            f.result()
    assert results["failed"] == 0, results
    assert results["old"] > 0 and results["new"] >= 20, results
    status, body = get(f"{server['rest']}/v1/models/swap")
    assert [s["version"] for s in body["model_version_status"]] == ["2"]  # latest policy unloads version 1


def test_client_cli_prints_top_labels(server, tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(saved_model.encode_png(images(1, seed=12)[0]))
    for transport in (["--url", server["rest"]], ["--grpc", server["grpc"]]):
        result = subprocess.run(
            [sys.executable, "-m", "keras_vit.serving.client", "predict", str(path), *transport, "--model_name", "vit"],
            capture_output=True, text=True, env=env(), cwd=REPO, timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        line = result.stdout.strip()
        assert line.startswith(f"{path}: ") and sum(label in line for label in LABELS) == 3


def test_a_second_server_on_a_busy_port_refuses_to_start_and_the_first_keeps_serving(server, exported):
    grpc_port, rest_port = int(server["grpc"].rsplit(":", 1)[1]), int(server["rest"].rsplit(":", 1)[1])
    for ports, flag in (((grpc_port, free_port()), "--port"), ((0, rest_port), "--rest_api_port")):
        second = subprocess.run(
            [sys.executable, "-m", "keras_vit.serving.server", "--port", str(ports[0]), "--rest_api_port", str(ports[1]),
             "--model_config_file", str(exported["config"])],
            cwd=REPO, env=env(), capture_output=True, text=True, timeout=120,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {flag}: cannot listen on 127.0.0.1:{ports[0] or ports[1]}")
        assert "listening" not in second.stderr
    # Every status call still reaches the first server (a shared gRPC port would send some to the second).
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for _ in range(10):
            stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "vit"}), timeout=30)
    assert_still_serving(server, exported)


def test_sigterm_stops_the_server_gracefully(server):
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-2000:]
    assert "Server stopped" in output
