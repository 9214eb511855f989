"""XLA in the served graph: `keras_vit.serving.export --jit_compile`, and `keras_vit.serving.server --xla_cpu_compilation_enabled`."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

import keras_vit
from harness import randomize
from keras_vit.serving import saved_model
from keras_vit.serving.client import RestClient
from keras_vit.serving.errors import ServingError
from keras_vit.serving.servable import Servable, ServingOptions
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("xla")
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=3)
    randomize(model, 4)
    for v in model.head.weights:  # confident, distinct answers per image
        v.assign(np.random.default_rng(4).normal(0, 2.0, v.shape).astype("float32"))
    return {
        "model": model,
        "root": root,
        "plain": saved_model.export(model, str(root / "plain")),
        "xla": saved_model.export(model, str(root / "xla"), jit_compile=True),
    }


def pixels(count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, 16, 16, 3)).astype("float32")


def test_the_exported_computation_is_compiled_and_answers_the_same(exports):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(f"{exports['xla']}/saved_model.pb", "rb").read())
    compiled = [f.signature.name for f in proto.meta_graphs[0].graph_def.library.function if f.attr["_XlaMustCompile"].b]
    assert compiled and all("compute" in name for name in compiled), compiled
    plain = Servable("vit", 1, exports["plain"])
    xla = Servable("vit", 1, exports["xla"], ServingOptions(xla_cpu_compilation_enabled=True))
    assert not plain.requires_xla and xla.requires_xla
    for signature, inputs in [("predict_pixels", {"pixels": pixels()}),
                              ("", {"images": np.array([saved_model.encode_png(p) for p in pixels().astype(np.uint8)], object)})]:
        expected, got = plain.predict(signature, inputs), xla.predict(signature, inputs)
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(got["classes"], expected["classes"])  # top-k inside the compiled cluster
        assert np.ptp(expected["probabilities"]) > 0.05  # distinct answers, not a uniform head
    with pytest.raises(ServingError, match="--xla_cpu_compilation_enabled") as refused:
        Servable("vit", 1, exports["xla"]).predict("predict_pixels", {"pixels": pixels()})
    assert refused.value.code == "FAILED_PRECONDITION"


def test_a_size_off_the_patch_stride_is_named_under_xla_too(tmp_path):
    """A compiled export of a dynamic model: 18x18 pixels (patch 4) get the model's own message, not tf2xla's."""
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1,
                          classes=3, dynamic_image_size=True)
    servable = Servable("vit", 1, saved_model.export(model, str(tmp_path / "xla"), jit_compile=True),
                        ServingOptions(xla_cpu_compilation_enabled=True))
    with pytest.raises(ServingError, match=r"does not divide by the patch stride \(4, 4\)") as refused:
        servable.predict("predict_pixels", {"pixels": np.zeros((1, 18, 18, 3), np.float32)})
    assert refused.value.code == "INVALID_ARGUMENT"
    assert servable.predict("predict_pixels", {"pixels": np.zeros((1, 24, 20, 3), np.float32)})["probabilities"].shape == (1, 3)


def test_the_server_runs_it_with_the_flag_and_refuses_it_without(exports):
    body = json.dumps({"signature_name": "predict_pixels", "instances": pixels(2).tolist()}).encode()
    expected = Servable("vit", 1, exports["plain"]).predict("predict_pixels", {"pixels": pixels(2)})["probabilities"]
    for flags, status in [(["--xla_cpu_compilation_enabled"], 200), ([], 400)]:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(port), "--model_name", "vit",
             "--model_base_path", str(exports["root"] / "xla"), *flags],
            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            RestClient(f"http://127.0.0.1:{port}", "vit").wait_until_available(process=server)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/vit:predict", data=body)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = (response.status, json.loads(response.read()))
            except urllib.error.HTTPError as error:
                answer = (error.code, json.loads(error.read()))
        finally:
            server.terminate()
            log = server.communicate(timeout=60)[0]
        assert answer[0] == status, answer
        if status == 200:
            np.testing.assert_allclose([p["probabilities"] for p in answer[1]["predictions"]], expected, atol=1e-5)
        else:
            assert "XLA compilation disabled" in answer[1]["error"] and "--xla_cpu_compilation_enabled" in answer[1]["error"]
            assert "exported with --jit_compile: its requests are refused" in log


def test_the_export_command_says_which_flag_the_server_needs(exports, tmp_path, capsys):
    from keras_vit.serving import export

    exports["model"].save(tmp_path / "model.keras")
    assert export.main(["--model", str(tmp_path / "model.keras"), "--model_base_path", str(tmp_path / "m"),
                        "--jit_compile"]) == 0
    assert "serve it with --xla_cpu_compilation_enabled" in capsys.readouterr().out
    assert export.main(["--model", str(tmp_path / "model.keras"), "--model_base_path", str(tmp_path / "m"),
                        "--jit_compile", "--format", "tflite"]) == 2
    assert "--jit_compile compiles the SavedModel's graph" in capsys.readouterr().err
