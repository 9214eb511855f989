"""keras_vit.serving.export --format tflite|tflite_int8: model.tflite beside the SavedModel, served by LiteRT with the same contract."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from test_export_flavours import build, int8_fragile_export
from keras_vit.serving import quantization, saved_model, signatures
from keras_vit.serving.client import GrpcClient, RestClient
from keras_vit.serving.servable import Servable, ServingOptions
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

OPTIONS = dict(image_size=32, patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2, classes=10)
LABELS = [f"class {i}" for i in range(10)]
OUTPUTS = {signatures.PROBABILITIES, signatures.CLASSES, signatures.SCORES, signatures.LABELS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model exported three ways: versions 1 (saved_model), 2 (tflite) and 3 (tflite_int8)."""
    base = tmp_path_factory.mktemp("lite") / "vit"
    model = build(OPTIONS, seed=5)
    paths = {f: saved_model.export(model, str(base), labels=LABELS, format=f) for f in ("saved_model", "tflite", "tflite_int8")}
    return base, paths


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(11)
    pixels = rng.uniform(0, 255, (24, 32, 32, 3)).astype("float32")
    photos = rng.integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)  # another size: the decode resizes them
    return pixels, np.array([saved_model.encode_png(p) for p in photos], dtype=object)


def answers(servable: Servable, inputs) -> dict[str, dict[str, np.ndarray]]:
    pixels, images = inputs
    return {
        signatures.PIXELS_SIGNATURE: servable.predict(signatures.PIXELS_SIGNATURE, {signatures.PIXELS_INPUT: pixels}),
        signatures.DEFAULT_SIGNATURE: servable.predict("", {signatures.IMAGES_INPUT: images}),
    }


def test_the_tflite_formats_add_model_tflite_to_the_version(exported):
    _, paths = exported
    lite = {form: os.path.join(path, signatures.TFLITE_FILE) for form, path in paths.items()}
    assert not os.path.exists(lite["saved_model"])
    for form, path in paths.items():
        assert os.path.exists(os.path.join(path, "saved_model.pb")), form  # TF Serving's default still works
    # int8 weights: about a quarter of float32's bytes.
    assert os.path.getsize(lite["tflite_int8"]) < 0.45 * os.path.getsize(lite["tflite"])


@pytest.mark.parametrize("form, probability_atol, min_agreement", [("tflite", 1e-5, 1.0), ("tflite_int8", 0.05, 0.9)])
def test_litert_serves_the_saved_models_contract(exported, inputs, form, probability_atol, min_agreement):
    _, paths = exported
    version = {"tflite": 2, "tflite_int8": 3}[form]
    reference = answers(Servable("vit", 1, paths["saved_model"]), inputs)
    lite = Servable("vit", version, paths[form], ServingOptions(prefer_tflite=True))
    assert lite.engine is not None
    got = answers(lite, inputs)
    for key, want in reference.items():
        assert set(got[key]) == OUTPUTS
        for name in OUTPUTS:
            assert got[key][name].dtype == want[name].dtype and got[key][name].shape == want[name].shape, (key, name)
        np.testing.assert_allclose(got[key][signatures.PROBABILITIES], want[signatures.PROBABILITIES], atol=probability_atol)
        agreement = np.mean(got[key][signatures.CLASSES][:, 0] == want[signatures.CLASSES][:, 0])
        assert agreement >= min_agreement, (key, agreement)
        top = got[key][signatures.CLASSES][:, 0]
        assert [label.decode() for label in got[key][signatures.LABELS][:, 0]] == [LABELS[i] for i in top]
    # Without --prefer_tflite_model the same folder serves its SavedModel, exactly.
    plain = answers(Servable("vit", version, paths[form]), inputs)
    for key, want in reference.items():
        np.testing.assert_array_equal(plain[key][signatures.PROBABILITIES], want[signatures.PROBABILITIES])


def test_a_corrupt_model_tflite_is_refused_naming_the_file(exported, tmp_path):
    _, paths = exported
    copy = tmp_path / "9"
    shutil.copytree(paths["tflite_int8"], copy)
    (copy / signatures.TFLITE_FILE).write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(ValueError, match=rf"{copy / signatures.TFLITE_FILE} is not a LiteRT model"):
        Servable("vit", 9, str(copy), ServingOptions(prefer_tflite=True))


def test_a_litert_export_refuses_a_bfloat16_policy(tmp_path):
    with pytest.raises(ValueError, match="--format tflite_int8 converts the float32 model"):
        saved_model.export(build(OPTIONS, seed=1), str(tmp_path / "m"), format="tflite_int8", dtype_policy="mixed_bfloat16")
    with pytest.raises(ValueError, match="Unknown export format 'onnx'"):
        saved_model.export(build(OPTIONS, seed=1), str(tmp_path / "m"), format="onnx")


def test_the_server_runs_model_tflite_over_rest_and_grpc_with_batching(exported, inputs):
    base, paths = exported
    lite = Servable("vit", 3, paths["tflite_int8"], ServingOptions(prefer_tflite=True))
    want = lite.predict("", {signatures.IMAGES_INPUT: inputs[1]})
    serve_and_compare(base, ["--prefer_tflite_model"], inputs[1], want, "Loaded vit version 3 (model.tflite, run by LiteRT)")


def serve_and_compare(base, flags: list[str], images, want: dict, loaded: str) -> None:
    """Starts serving.server on `base` with `flags` and batching; its REST and gRPC answers to `images` must be `want`,
    its metadata the contract's, and its log must say `loaded`."""
    rest_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_name", "vit", "--model_base_path", str(base), *flags, "--enable_batching"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        rest = RestClient(f"http://127.0.0.1:{rest_port}", "vit")
        rest.wait_until_available(process=process)
        served = rest.predict_images(images)
        np.testing.assert_allclose([a[signatures.PROBABILITIES] for a in served], want[signatures.PROBABILITIES], atol=1e-6)
        assert [a[signatures.LABELS] for a in served] == [[v.decode() for v in row] for row in want[signatures.LABELS]]
        by_grpc = GrpcClient(f"127.0.0.1:{grpc_port}", "vit").predict_images(images)
        np.testing.assert_allclose(by_grpc[signatures.PROBABILITIES], want[signatures.PROBABILITIES], atol=1e-6)
        metadata = rest.metadata()["metadata"]["signature_def"]["signature_def"]
        assert set(metadata) >= {signatures.DEFAULT_SIGNATURE, signatures.PIXELS_SIGNATURE}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-2000:]
    assert loaded in output, output[-2000:]


def test_the_int8_export_reports_its_check(exported):
    _, paths = exported
    with open(os.path.join(paths["tflite_int8"], quantization.REPORT_FILE)) as f:
        report = quantization.QuantizationReport(**json.load(f))
    assert report.images == 2 and report.source == "warm-up images" and 0.99 <= report.top1_agreement <= 1
    assert report.int8_images_per_second > 0 and report.float32_images_per_second > 0
    lines = report.lines()
    assert lines[0].startswith("int8 check: top-1 agreement with the float32 model 100.00% on 2 warm-up images")
    assert any("--calibration_images" in line for line in lines)
    assert not os.path.exists(os.path.join(paths["tflite"], quantization.REPORT_FILE))


def test_the_speed_is_timed_for_its_seconds_or_its_most_calls_whichever_comes_first():
    calls = []
    rate = quantization.images_per_second(lambda: calls.append(1), seconds=60)
    assert len(calls) == 1 + quantization.MAX_TIMED_CALLS and rate > 0  # one warm-up call, then the cap
    calls.clear()
    quantization.images_per_second(lambda: calls.append(1), seconds=0)
    assert len(calls) == 1 + 3  # never fewer than three timed calls


@pytest.mark.parametrize("runtime, flags", [("LiteRT", ["--format", "tflite_int8"]),
                                           ("OpenVINO", ["--format", "openvino", "--precision", "int8"])])
def test_an_int8_model_that_disagrees_is_refused_and_writes_no_version(runtime, flags, tmp_path, capsys):
    """A head whose classes differ by far less than int8's rounding of its weights (32 classes: LiteRT leaves tensors
    under 1,024 weights in float32): the best class flips, in LiteRT's int8 and in OpenVINO's (NNCF) alike. The
    export command runs in this process (its exit status is `main`'s return value)."""
    from keras_vit.serving import export

    model_path, folder = int8_fragile_export(OPTIONS, tmp_path)
    command = ["--model", model_path, "--model_base_path", str(tmp_path / "vit"), *flags, "--calibration_images", folder]
    assert export.main([*command, "--min_top1_agreement", "1"]) == 2
    refused = capsys.readouterr()
    errors = [line for line in refused.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "on 16 images of --calibration_images is below --min_top1_agreement 1" in errors[0], \
        refused.err
    assert not any(name.isdigit() for name in os.listdir(tmp_path / "vit"))  # no version appeared
    assert export.main([*command, "--min_top1_agreement", "0"]) == 0
    accepted = capsys.readouterr()
    assert "int8 check: top-1 agreement with the float32 model" in accepted.out
    assert "on 16 images of --calibration_images" in accepted.out and "warm-up images are synthetic" not in accepted.out
    assert f"float32, both run by {runtime} at batch 1" in accepted.out
