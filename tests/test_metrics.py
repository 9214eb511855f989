"""Prometheus metrics (`--monitoring_config_file`): a real server scraped after REST and gRPC traffic."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import keras_vit
from keras_vit.serving import saved_model
from keras_vit.serving.client import GrpcClient, RestClient
from keras_vit.serving.metrics import read_monitoring_config
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=3)
    saved_model.export(model, str(root / "vit"))
    config = root / "monitoring.config"
    config.write_text(f'prometheus_config {{\n  enable: true\n  path: "{PATH}"\n}}\n')
    rest_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_name", "vit", "--model_base_path", str(root / "vit"), "--enable_batching",
         "--monitoring_config_file", str(config)],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{rest_port}"
    RestClient(url, "vit").wait_until_available(process=process)
    yield {"url": url, "grpc": f"127.0.0.1:{grpc_port}", "root": root}
    process.terminate()
    process.wait(timeout=60)


def post(url: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def scrape(server) -> dict:
    """{(metric sample name, sorted labels): value} of one scrape, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(server["url"] + PATH, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def count(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_counts_equal_the_requests_sent_by_api_entrypoint_and_status(server):
    before = scrape(server)
    pixels = np.zeros((2, 16, 16, 3)).tolist()
    predict = f"{server['url']}/v1/models/vit:predict"
    statuses = [post(predict, {"signature_name": "predict_pixels", "instances": pixels}) for _ in range(3)]
    statuses += [post(predict, {"signature_name": "predict_pixels", "instances": [[[1.0]]]}) for _ in range(2)]
    statuses.append(post(f"{server['url']}/v1/models/nope:predict", {"instances": [1]}))
    assert statuses == [200] * 3 + [400] * 2 + [404]
    client = GrpcClient(server["grpc"], "vit")
    client.predict_images([saved_model.encode_png(np.zeros((20, 20, 3), np.uint8))])
    client.close()
    with grpc.insecure_channel(server["grpc"]) as channel:
        request = predict_pb2.PredictRequest(model_spec={"name": "vit", "signature_name": "nope"})
        with pytest.raises(grpc.RpcError):
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)

    after = scrape(server)
    name = ":tensorflow:serving:request_count_total"
    expected = {
        ("vit", "REST", "OK"): 3, ("vit", "REST", "INVALID_ARGUMENT"): 2, ("nope", "REST", "NOT_FOUND"): 1,
        ("vit", "GRPC", "OK"): 1, ("vit", "GRPC", "INVALID_ARGUMENT"): 1,
    }
    for (model, entrypoint, status), sent in expected.items():
        labels = dict(model_name=model, API="predict", entrypoint=entrypoint, status=status)
        assert count(after, name, **labels) - count(before, name, **labels) == sent, (model, entrypoint, status)
    latency = ":tensorflow:serving:request_latency_count"
    assert count(after, latency, model_name="vit", entrypoint="REST") - count(before, latency, model_name="vit",
                                                                               entrypoint="REST") == 5
    # The model ran 3 + 1 times (the 400s never reached it), each in a batch it was counted in.
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert count(after, runtime, model_name="vit", runtime="TF") - count(before, runtime, model_name="vit") == 4
    batches = ":tensorflow:serving:batching:processed_batch_size_sum"
    assert count(after, batches, model_name="vit") - count(before, batches, model_name="vit") == 3 * 2 + 1
    assert count(after, ":tensorflow:cc:saved_model:load_attempt_count_total", status="success") >= 1
    assert count(after, ":tensorflow:serving:model_versions_available", model_name="vit") == 1
    # Bucket bounds as TF Serving prints them (six significant digits), not the float product's noise.
    bounds = {dict(labels)["le"] for name, labels in after if name == latency.replace("_count", "_bucket")}
    assert {"10.0", "32.4", "188.957", "1.27482e+06", "+Inf"} <= bounds and len(bounds) == 34, sorted(bounds)
    assert all(len(bound) <= 11 for bound in bounds), sorted(bounds)


def test_monitoring_config_files_as_tf_serving_reads_them(tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config { enable: true }\n")
    assert read_monitoring_config(str(path)) == PATH  # TF Serving's default path
    path.write_text("prometheus_config { enable: false path: '/m' }\n")
    assert read_monitoring_config(str(path)) is None
    path.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(ValueError, match=r"monitoring.config:1:.*has no field named \"enabled\""):
        read_monitoring_config(str(path))
