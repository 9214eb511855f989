"""keras_vit.serving.export follows the model's own config: each flavour served over REST equals model.predict on the same pixels."""

import signal
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf

import keras_vit
from harness import randomize, randomize_at_trained_scale
from keras_vit.preprocessing import eval_resize, model_inputs
from keras_vit.serving import saved_model, signatures
from keras_vit.serving.client import RestClient
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

TINY = dict(patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=3)
FLAVOURS = {
    "plain": dict(TINY, image_size=16),
    "preprocessing": dict(TINY, image_size=16, include_preprocessing=True),
    "softmax": dict(TINY, image_size=16, classifier_activation="softmax"),
    "headless": dict(TINY, image_size=16, include_top=False, representation_size=8),
    "hybrid": dict(TINY, image_size=32, resnet_layers=(1,), patch_size=2),
    "cropped": dict(TINY, image_size=16, crop_fraction=0.875),
}


def build(options: dict, seed: int) -> keras_vit.VisionTransformer:
    model = keras_vit.ViT(**options)
    randomize(model, seed)
    if model.head is not None:  # confident, distinct answers per image
        for v in model.head.weights:
            v.assign(np.random.default_rng(seed).normal(0, 2.0, v.shape).astype("float32"))
    return model


def int8_fragile_export(options: dict, folder) -> tuple[str, str]:
    """(a .keras model, a folder of 16 calibration PNGs) whose head's classes differ by far less than int8's rounding
    of its weights (32 classes: LiteRT leaves tensors under 1,024 weights in float32): int8 flips the best class."""
    model = build(dict(options, classes=32), seed=5)
    rng = np.random.default_rng(3)
    column = rng.normal(0, 1, (model.head.kernel.shape[0], 1))
    model.head.kernel.assign((column + rng.normal(0, 1e-5, model.head.kernel.shape)).astype("float32"))
    model.head.bias.assign(np.zeros(model.head.bias.shape, "float32"))
    calibration = folder / "calibration"
    calibration.mkdir()
    for i in range(16):
        (calibration / f"{i}.png").write_bytes(saved_model.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    model.save(folder / "model.keras")
    return str(folder / "model.keras"), str(calibration)


def expected(model: keras_vit.VisionTransformer, photos: np.ndarray) -> np.ndarray:
    """What the served model must answer, from the input contract and the model alone."""
    pixels = np.stack([eval_resize(p, model.image_size, model.crop_fraction).numpy() for p in photos])
    outputs = model.predict(model_inputs(model, pixels), verbose=0)
    if model.include_top and model.classifier_activation is None:
        outputs = keras.ops.convert_to_numpy(keras.ops.softmax(outputs, axis=-1))
    return outputs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("flavours")
    models = {}
    config = ["model_config_list {"]
    for seed, (name, options) in enumerate(FLAVOURS.items()):
        models[name] = build(options, seed)
        saved_model.export(models[name], str(root / name))
        config.append(f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}')
    (root / "models.config").write_text("\n".join(config + ["}"]))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(port),
         "--model_config_file", str(root / "models.config"), "--file_system_poll_wait_seconds", "0"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for name in FLAVOURS:
        RestClient(url, name).wait_until_available(process=process)
    yield url, models
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


@pytest.mark.parametrize("name", list(FLAVOURS))
def test_served_outputs_equal_model_predict(served, name):
    url, models = served
    model = models[name]
    # Photos of another size than the model's, so that the resize (and crop) matter.
    photos = np.random.default_rng(7).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    answers = RestClient(url, name).predict_images(saved_model.encode_png(p) for p in photos)
    want = expected(model, photos)
    if model.include_top:
        got = np.array([a[signatures.PROBABILITIES] for a in answers])
        np.testing.assert_allclose(got, want, atol=2e-5)
        assert [a[signatures.CLASSES][0] for a in answers] == want.argmax(-1).tolist()
    else:  # one output: TF Serving's row format gives its values without a name; the metadata names it
        np.testing.assert_allclose(np.array(answers), want, atol=2e-5)
        outputs = RestClient(url, name).metadata()["metadata"]["signature_def"]["signature_def"][
            signatures.DEFAULT_SIGNATURE]["outputs"]
        assert set(outputs) == {signatures.FEATURES}


def test_the_crop_is_served(served):
    url, models = served
    photos = np.random.default_rng(8).integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    cropped = np.array([a[signatures.PROBABILITIES] for a in RestClient(url, "cropped").predict_images(
        saved_model.encode_png(p) for p in photos)])
    uncropped = keras_vit.ViT(**dict(FLAVOURS["cropped"], crop_fraction=1.0))
    uncropped.set_weights(models["cropped"].get_weights())
    # The served answers are the cropped model's, and far from what the same weights answer without the crop.
    with_crop = np.abs(cropped - expected(models["cropped"], photos)).max()
    without_crop = np.abs(cropped - expected(uncropped, photos)).max()
    assert without_crop > 20 * max(with_crop, 1e-6), (with_crop, without_crop)


def test_labels_for_a_headless_model_are_refused(tmp_path):
    model = keras_vit.ViT(**FLAVOURS["headless"])
    with pytest.raises(ValueError, match="without its head"):
        saved_model.export(model, str(tmp_path / "m"), labels=["a", "b", "c"])


#: Matrix products of the served graph, whose operand type says what it computes in.
MATMUL_OPS = {"MatMul", "_FusedMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv2D", "_FusedConv2D"}


def matmul_dtypes(function) -> set[str]:
    graph = function.graph.as_graph_def()
    nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
    return {tf.dtypes.as_dtype(node.attr["T"].type).name for node in nodes if node.op in MATMUL_OPS and "T" in node.attr}


def test_a_bfloat16_export_computes_in_bfloat16_and_serves_float32(tmp_path):
    model = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2, classes=5)
    randomize_at_trained_scale(model)
    for v in model.head.weights:  # confident, distinct answers: probabilities far from 1/5, as a trained head gives
        v.assign(np.random.default_rng(4).normal(0, 2.0, v.shape).astype("float32"))
    pixels = tf.constant(np.random.default_rng(3).uniform(0, 255, (8, 32, 32, 3)).astype("float32"))
    served = {}
    for policy in ("float32", "mixed_bfloat16"):
        serve = tf.saved_model.load(saved_model.export(model, str(tmp_path / policy), dtype_policy=policy)).signatures[
            signatures.PIXELS_SIGNATURE]
        assert matmul_dtypes(serve) == {policy.removeprefix("mixed_")}, policy
        served[policy] = serve(**{signatures.PIXELS_INPUT: pixels})[signatures.PROBABILITIES].numpy()
    assert served["mixed_bfloat16"].dtype == np.float32
    assert served["float32"].max(axis=1).min() > 0.5 and served["float32"].min() < 0.05
    # bfloat16's 8-bit mantissa moves these probabilities by up to 0.033 (measured, the worst of 3 seeds: confident
    # heads turn its ~1% logit error into that much near p = 0.5); a wrong graph moves them by far more.
    np.testing.assert_allclose(served["mixed_bfloat16"], served["float32"], atol=0.05)
    assert model.dtype_policy.name == "float32"  # the model given is left as it was
    with pytest.raises(ValueError, match="Unknown dtype policy 'int8'"):
        saved_model.export(model, str(tmp_path / "int8"), dtype_policy="int8")
