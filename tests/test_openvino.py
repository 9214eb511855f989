"""keras_vit.serving.export --format openvino: an OpenVINO IR beside the SavedModel, served with the same contract."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from test_export_flavours import build
from keras_vit.serving import openvino_model, saved_model, signatures
from keras_vit.serving.client import GrpcClient, RestClient
from keras_vit.serving.servable import Servable
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

OPTIONS = dict(image_size=32, patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2, classes=10)
LABELS = [f"class {i}" for i in range(10)]
PRECISIONS = ["f32", "int8"] + (["bf16"] if openvino_model.native_bf16() else [])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model exported in each precision this CPU runs: versions 1, 2 (and 3)."""
    base = tmp_path_factory.mktemp("openvino") / "vit"
    model = build(OPTIONS, seed=5)
    return base, {p: saved_model.export(model, str(base), labels=LABELS, format="openvino", precision=p)
                  for p in PRECISIONS}


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(11)
    pixels = rng.uniform(0, 255, (24, 32, 32, 3)).astype("float32")
    photos = rng.integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)  # another size: the SavedModel's decode resizes
    return pixels, np.array([saved_model.encode_png(p) for p in photos], dtype=object)


@pytest.mark.parametrize("precision, probability_atol, min_agreement", [("f32", 1e-5, 1.0), ("bf16", 0.01, 0.9),
                                                                         ("int8", 0.05, 0.9)])
def test_openvino_serves_the_saved_models_contract(exported, inputs, precision, probability_atol, min_agreement):
    if precision not in PRECISIONS:
        pytest.skip("this CPU has no native bfloat16: the export refuses bf16 here")
    _, paths = exported
    graph = Servable("vit", 1, paths[precision])
    served = Servable("vit", 1, paths[precision], prefer_openvino=True)
    assert served.runtime == "OpenVINO" and served.lite.precision == precision
    pixels, images = inputs
    for name, feed in ((signatures.PIXELS_SIGNATURE, {signatures.PIXELS_INPUT: pixels}),
                       ("", {signatures.IMAGES_INPUT: images})):
        want, got = graph.predict(name, feed), served.predict(name, feed)
        assert set(got) == set(want) == {signatures.PROBABILITIES, signatures.CLASSES, signatures.SCORES,
                                         signatures.LABELS}
        np.testing.assert_allclose(got[signatures.PROBABILITIES], want[signatures.PROBABILITIES], atol=probability_atol)
        agreement = np.mean(got[signatures.CLASSES][:, 0] == want[signatures.CLASSES][:, 0])
        assert agreement >= min_agreement, (name, agreement)
        assert [list(row) for row in got[signatures.LABELS]] == [[LABELS[i].encode() for i in row]
                                                                for row in got[signatures.CLASSES]]


def test_the_server_runs_the_openvino_model_over_rest_and_grpc_with_batching(exported, inputs):
    base, paths = exported
    newest = max(int(os.path.basename(p)) for p in paths.values())
    want = Servable("vit", newest, paths[PRECISIONS[-1]], prefer_openvino=True).predict(
        "", {signatures.IMAGES_INPUT: inputs[1]})
    rest_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_name", "vit", "--model_base_path", str(base), "--prefer_openvino_model", "--enable_batching"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        rest = RestClient(f"http://127.0.0.1:{rest_port}", "vit")
        rest.wait_until_available(process=process)
        served = rest.predict_images(inputs[1])
        np.testing.assert_allclose([a[signatures.PROBABILITIES] for a in served], want[signatures.PROBABILITIES],
                                   atol=1e-6)
        assert [a[signatures.LABELS] for a in served] == [[v.decode() for v in row] for row in want[signatures.LABELS]]
        by_grpc = GrpcClient(f"127.0.0.1:{grpc_port}", "vit").predict_images(inputs[1])
        np.testing.assert_allclose(by_grpc[signatures.PROBABILITIES], want[signatures.PROBABILITIES], atol=1e-6)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-2000:]
    assert f"Loaded vit version {newest} (openvino/, run by OpenVINO)" in output, output[-2000:]


def test_an_openvino_int8_model_that_disagrees_is_refused_and_writes_no_version(tmp_path):
    """A head whose classes differ by far less than int8's rounding of its weights: the best class flips."""
    model = build(dict(OPTIONS, classes=32), seed=5)
    rng = np.random.default_rng(3)
    column = rng.normal(0, 1, (model.head.kernel.shape[0], 1))
    model.head.kernel.assign((column + rng.normal(0, 1e-5, model.head.kernel.shape)).astype("float32"))
    model.head.bias.assign(np.zeros(model.head.bias.shape, "float32"))
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i in range(16):
        (folder / f"{i}.png").write_bytes(saved_model.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    model.save(tmp_path / "model.keras")
    command = [sys.executable, "-m", "keras_vit.serving.export", "--model", str(tmp_path / "model.keras"),
               "--model_base_path", str(tmp_path / "vit"), "--format", "openvino", "--precision", "int8",
               "--calibration_images", str(folder)]
    refused = subprocess.run([*command, "--min_top1_agreement", "1"], cwd=REPO, env=env(), capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "on 16 images of --calibration_images is below --min_top1_agreement 1" in errors[0], \
        refused.stderr
    assert not any(name.isdigit() for name in os.listdir(tmp_path / "vit"))  # no version appeared
    accepted = subprocess.run([*command, "--min_top1_agreement", "0"], cwd=REPO, env=env(), capture_output=True,
                              text=True, timeout=300)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert "float32, both run by OpenVINO at batch 1" in accepted.stdout


def test_precision_belongs_to_the_openvino_format(tmp_path):
    with pytest.raises(ValueError, match="--precision chooses the OpenVINO model's precision; --format tflite"):
        saved_model.export(build(OPTIONS, seed=5), str(tmp_path / "vit"), format="tflite", precision="int8")


def test_format_auto_writes_the_fastest_format_that_passes_and_prints_its_table(tmp_path):
    model = build(OPTIONS, seed=5)
    model.save(tmp_path / "model.keras")
    done = subprocess.run([sys.executable, "-m", "keras_vit.serving.export", "--model", str(tmp_path / "model.keras"),
                           "--model_base_path", str(tmp_path / "vit"), "--format", "auto"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    rows = {line.split("|")[1].strip(): line for line in table}
    assert set(rows) == {"saved_model", "tflite", "tflite_int8", "openvino f32", "openvino bf16", "openvino int8"}
    chosen = done.stdout.split("--format auto chose ")[1].split(":")[0]
    speeds = {name: float(line.split("|")[2]) for name, line in rows.items() if line.split("|")[2].strip()}
    assert chosen == max(speeds, key=speeds.get)  # every candidate that ran passed here: the fastest is chosen
    version = tmp_path / "vit" / "1"
    assert sorted(p.name for p in (tmp_path / "vit").iterdir() if p.name.isdigit()) == ["1"]  # no trial left behind
    assert not [p for p in (tmp_path / "vit").iterdir() if p.name.startswith(".")]
    runtime = {"tflite": "LiteRT", "tflite_int8": "LiteRT"}.get(chosen, "OpenVINO" if "openvino" in chosen else "TF")
    served = Servable("vit", 1, str(version), prefer_tflite=True, prefer_openvino=True)
    assert served.runtime == runtime
